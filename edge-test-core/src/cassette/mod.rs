//! Cassettes: a backend's real traffic, recorded once into a file a reviewer can read, and
//! replayed offline in every later run (the model of Go's rpcreplay).
//!
//! A test puts a cassette on a declared backend with [`Edge::cassette`](crate::Edge::cassette).
//! Requests that no mounted mock matches go to the cassette: replayed from the file, or,
//! while recording, forwarded to the real origin (`origin`) and written down (scrubbed by
//! `scrub`) when the test ends. `file` is the format, `matching` how a live request finds its
//! recorded interaction.

mod file;
mod matching;
pub(crate) mod origin;
mod scrub;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use matching::MatchOn;

use crate::mock::Reply;
use file::{CassetteFile, Interaction};
pub(crate) use file::{Fault, Outcome};

/// The variable that overrides every cassette's mode for a run, as `INSTA_UPDATE` does for
/// snapshots: `replay`, `record` or `record-if-missing`.
pub const MODE_VARIABLE: &str = "EDGE_TEST_CASSETTES";

/// How a cassette serves its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CassetteMode {
    /// From the file, with no network (the default, and the only mode when `CI` is set).
    Replay,
    /// Forward every request to the real origin and write the file when the test ends.
    Record,
    /// Replay if the file exists, record otherwise.
    RecordIfMissing,
}

impl CassetteMode {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "replay" => Some(Self::Replay),
            "record" => Some(Self::Record),
            "record-if-missing" => Some(Self::RecordIfMissing),
            _ => None,
        }
    }
}

/// A request as a cassette holds it (and as a scrubber sees it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CassetteRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Lower-case names, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A response as a cassette holds it (and as a scrubber sees it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CassetteResponse {
    pub status: u16,
    /// Lower-case names, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

type RequestScrubber = Arc<dyn Fn(&mut CassetteRequest) + Send + Sync>;
type ResponseScrubber = Arc<dyn Fn(&mut CassetteResponse) + Send + Sync>;

/// How a test wants a backend's cassette: built here, put on a backend with
/// [`Edge::cassette`](crate::Edge::cassette).
///
/// ```no_run
/// # async fn doc(edge: edge_test_core::Edge) {
/// use edge_test_core::cassette::{Cassette, CassetteMode, MatchOn};
///
/// let tape = edge.cassette(
///     "origin",
///     Cassette::new()
///         .mode(CassetteMode::RecordIfMissing)
///         .match_on([MatchOn::Method, MatchOn::Path])
///         .scrub_request(|request| request.headers.retain(|(name, _)| name != "x-trace")),
/// );
/// let seed = tape.state("seed", || "generated at record time".to_owned());
/// # let _ = seed;
/// # }
/// ```
#[derive(Clone)]
#[must_use = "a Cassette does nothing until it is put on a backend with `Edge::cassette`"]
pub struct Cassette {
    mode: CassetteMode,
    origin: Option<String>,
    path: Option<PathBuf>,
    match_on: Vec<MatchOn>,
    request_scrubbers: Vec<RequestScrubber>,
    response_scrubbers: Vec<ResponseScrubber>,
    fail_on_unused: bool,
    record_timeout: Duration,
}

impl Default for Cassette {
    fn default() -> Self {
        Self::new()
    }
}

impl Cassette {
    /// Replay, matching on method, path, query and body, with the default scrubbers.
    pub fn new() -> Self {
        Self {
            mode: CassetteMode::Replay,
            origin: None,
            path: None,
            match_on: MatchOn::DEFAULT.to_vec(),
            request_scrubbers: Vec::new(),
            response_scrubbers: Vec::new(),
            fail_on_unused: false,
            record_timeout: Duration::from_secs(30),
        }
    }

    /// The mode, unless [`MODE_VARIABLE`] names one for the run.
    pub fn mode(mut self, mode: CassetteMode) -> Self {
        self.mode = mode;
        self
    }

    /// Where recording forwards to (`http://` or `https://`, with a port if not the
    /// scheme's), instead of the backend's `url` in `fastly.toml`; the variable
    /// `EDGE_TEST_ORIGIN_<BACKEND>` (upper case, `-` as `_`) overrides both.
    pub fn origin(mut self, url: impl Into<String>) -> Self {
        self.origin = Some(url.into());
        self
    }

    /// The file, instead of `<crate>/tests/cassettes/<test>__<backend>.json`.
    pub fn path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// What a live request must share with a recorded one to be answered by it (default:
    /// method, path, query and body, JSON bodies compared as JSON).
    pub fn match_on(mut self, fields: impl IntoIterator<Item = MatchOn>) -> Self {
        self.match_on = fields.into_iter().collect();
        self
    }

    /// Changes every request before it is written, and every live request before it is
    /// matched, after the default scrubbers.
    pub fn scrub_request(
        mut self,
        scrub: impl Fn(&mut CassetteRequest) + Send + Sync + 'static,
    ) -> Self {
        self.request_scrubbers.push(Arc::new(scrub));
        self
    }

    /// Changes every response before it is written, after the default scrubbers.
    pub fn scrub_response(
        mut self,
        scrub: impl Fn(&mut CassetteResponse) + Send + Sync + 'static,
    ) -> Self {
        self.response_scrubbers.push(Arc::new(scrub));
        self
    }

    /// Fails the test if, at its end, recorded interactions were never replayed.
    pub fn fail_on_unused(mut self) -> Self {
        self.fail_on_unused = true;
        self
    }

    /// How long recording waits for the real origin before recording a time-out (30 s).
    pub fn record_timeout(mut self, limit: Duration) -> Self {
        self.record_timeout = limit;
        self
    }
}

/// What the test and the backend's server share about one cassette.
pub(crate) struct Tape {
    config: Cassette,
    path: PathBuf,
    /// The service the recording names in its file.
    service: String,
    backend: String,
    test: String,
    /// Where recording forwards to; `None` when replaying.
    recording_to: Option<String>,
    state: Mutex<TapeState>,
}

#[derive(Default)]
struct TapeState {
    interactions: Vec<Interaction>,
    used: Vec<bool>,
    values: BTreeMap<String, String>,
}

/// A cassette on a backend: what the test reads back from it.
#[derive(Clone)]
pub struct CassetteHandle {
    tape: Arc<Tape>,
}

impl CassetteHandle {
    /// A value the test fixes at record time (a timestamp, a seed, an id) and gets back
    /// unchanged at replay: `make` runs only while recording.
    pub fn state(&self, name: &str, make: impl FnOnce() -> String) -> String {
        let mut state = crate::sync::lock(&self.tape.state);
        if self.tape.recording_to.is_some() {
            let value = make();
            state.values.insert(name.to_owned(), value.clone());
            return value;
        }
        state.values.get(name).cloned().unwrap_or_else(|| {
            panic!(
                "edge-test: cassette {} holds no state `{name}`: record it again ({})",
                self.tape.path.display(),
                record_hint(&self.tape.test)
            )
        })
    }

    /// The cassette's file.
    pub fn path(&self) -> &Path {
        &self.tape.path
    }

    /// Whether this run records (rather than replays).
    pub fn is_recording(&self) -> bool {
        self.tape.recording_to.is_some()
    }
}

fn record_hint(test: &str) -> String {
    let name = test.rsplit("::").next().unwrap_or(test);
    format!("`{MODE_VARIABLE}=record cargo test {name}` records it from the real origin")
}

/// Whether `CI` says this is a CI run (set, and not `false` or `0`).
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Opens the cassette `config` asks for on `backend`: the file read for replay, or the
/// origin resolved for recording. `Err` names the problem and the fix.
pub(crate) fn open(
    config: Cassette,
    service: &str,
    test: &str,
    backend: &str,
    manifest_url: Option<&str>,
) -> Result<CassetteHandle, String> {
    let mode = match std::env::var(MODE_VARIABLE) {
        Ok(text) if !text.is_empty() => CassetteMode::parse(&text).ok_or_else(|| {
            format!(
                "{MODE_VARIABLE}={text:?} is not a cassette mode: use replay, record or \
                 record-if-missing"
            )
        })?,
        _ => config.mode,
    };
    let path = config
        .path
        .clone()
        .unwrap_or_else(|| default_path(test, backend));
    let exists = path.is_file();
    let record = match mode {
        CassetteMode::Replay => false,
        CassetteMode::Record => true,
        CassetteMode::RecordIfMissing => !exists,
    };
    if record && in_ci() {
        return Err(format!(
            "cassette {} would be recorded, but CI is set: CI only replays cassettes. \
             Record it on a machine that can reach the origin ({}) and commit it",
            path.display(),
            record_hint(test)
        ));
    }
    let mut state = TapeState::default();
    let recording_to = if record {
        let variable = format!(
            "EDGE_TEST_ORIGIN_{}",
            backend.to_uppercase().replace(['-', '.'], "_")
        );
        let origin = std::env::var(&variable)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| config.origin.clone())
            .or_else(|| manifest_url.map(str::to_owned))
            .ok_or_else(|| {
                format!(
                    "cassette {} records backend `{backend}`, but nothing names its origin: \
                     give it a `url` in fastly.toml, `Cassette::origin`, or {variable}",
                    path.display()
                )
            })?;
        origin::check_url(&origin)?;
        Some(origin)
    } else {
        if !exists {
            return Err(format!(
                "cassette {} does not exist: {}",
                path.display(),
                record_hint(test)
            ));
        }
        let file = CassetteFile::read(&path)?;
        state.used = vec![false; file.interactions.len()];
        state.interactions = file.interactions;
        state.values = file.state;
        None
    };
    Ok(CassetteHandle {
        tape: Arc::new(Tape {
            config,
            path,
            service: service.to_owned(),
            backend: backend.to_owned(),
            test: test.to_owned(),
            recording_to,
            state: Mutex::new(state),
        }),
    })
}

/// `<crate>/tests/cassettes/<test path, :: as __>__<backend>.json`, the crate being the one
/// whose test is running (cargo and nextest set `CARGO_MANIFEST_DIR` for it).
fn default_path(test: &str, backend: &str) -> PathBuf {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let name: String = format!("{}__{backend}", test.replace("::", "__"))
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join("tests")
        .join("cassettes")
        .join(format!("{name}.json"))
}

impl CassetteHandle {
    pub(crate) fn tape(&self) -> Arc<Tape> {
        self.tape.clone()
    }
}

/// What the backend's server does with a request no mock matched.
pub(crate) enum Served {
    /// The recorded answer, or a failure to report and the reply the guest gets.
    Replayed(Result<Reply, (String, Reply)>),
    /// Recording: forward it to this origin.
    Forward(String),
}

impl Tape {
    fn scrubbed_request(&self, mut request: CassetteRequest) -> CassetteRequest {
        scrub::request(&mut request);
        for scrub in &self.config.request_scrubbers {
            scrub(&mut request);
        }
        request
    }

    fn scrubbed_response(&self, mut response: CassetteResponse) -> CassetteResponse {
        scrub::response(&mut response);
        for scrub in &self.config.response_scrubbers {
            scrub(&mut response);
        }
        response
    }

    /// Answers `request` from the file, or says to forward it.
    pub(crate) fn serve(&self, request: CassetteRequest) -> Served {
        if let Some(origin) = &self.recording_to {
            return Served::Forward(origin.clone());
        }
        let live = self.scrubbed_request(request);
        let mut state = crate::sync::lock(&self.state);
        let found = (0..state.interactions.len()).find(|&i| {
            !state.used[i]
                && matching::matches(&self.config.match_on, &state.interactions[i].request, &live)
        });
        Served::Replayed(match found {
            Some(i) => {
                state.used[i] = true;
                Ok(state.interactions[i].outcome.reply())
            }
            None => {
                let closest = matching::closest(
                    &self.config.match_on,
                    &state.interactions,
                    &state.used,
                    &live,
                );
                let report = format!(
                    "cassette {} holds no unused interaction matching it (matching on {}).{closest}\n  \
                     If the service now asks this, record the cassette again ({}).",
                    self.path.display(),
                    matching::describe(&self.config.match_on),
                    record_hint(&self.test)
                );
                let reply = Reply::text(
                    500,
                    format!(
                        "edge-test: cassette for `{}` has no such request",
                        self.backend
                    ),
                );
                Err((report, reply))
            }
        })
    }

    /// Forwards `request` to `origin`, writes down the exchange (scrubbed), and answers.
    pub(crate) async fn forward(&self, origin: &str, request: CassetteRequest) -> Reply {
        let outcome = origin::forward(origin, &request, self.config.record_timeout).await;
        // The guest gets what the origin sent; the file gets it scrubbed.
        let reply = outcome.reply();
        let outcome = match outcome {
            Outcome::Response(response) => Outcome::Response(self.scrubbed_response(response)),
            fault => fault,
        };
        let recorded = Interaction {
            request: self.scrubbed_request(request),
            outcome,
        };
        crate::sync::lock(&self.state).interactions.push(recorded);
        reply
    }

    /// At the test's end: writes a recording, or names interactions never replayed when
    /// the cassette asked for that. `Err` is the test's failure.
    pub(crate) fn finish(&self) -> Result<(), String> {
        let state = crate::sync::lock(&self.state);
        if let Some(origin) = &self.recording_to {
            let file = CassetteFile {
                service: self.service.clone(),
                backend: self.backend.clone(),
                test: self.test.clone(),
                origin: origin.clone(),
                recorded_at: file::now(),
                state: state.values.clone(),
                interactions: state.interactions.clone(),
            };
            return file.write(&self.path);
        }
        if !self.config.fail_on_unused {
            return Ok(());
        }
        let unused: Vec<String> = state
            .interactions
            .iter()
            .zip(&state.used)
            .enumerate()
            .filter(|(_, (_, used))| !**used)
            .map(|(i, (interaction, _))| {
                format!("    #{} {}", i + 1, interaction.request.summary())
            })
            .collect();
        if unused.is_empty() {
            return Ok(());
        }
        Err(format!(
            "edge-test: cassette {} of backend `{}` has interactions the test never replayed:\n{}",
            self.path.display(),
            self.backend,
            unused.join("\n")
        ))
    }
}

/// Header pairs as a cassette holds them (a value that is not UTF-8 kept lossily).
pub(crate) fn header_pairs<'h>(
    headers: impl Iterator<Item = (&'h str, &'h [u8])>,
) -> Vec<(String, String)> {
    headers
        .map(|(name, value)| (name.to_owned(), String::from_utf8_lossy(value).into_owned()))
        .collect()
}

impl CassetteRequest {
    pub(crate) fn summary(&self) -> String {
        match &self.query {
            Some(query) => format!("{} {}?{query}", self.method, self.path),
            None => format!("{} {}", self.method, self.path),
        }
    }
}
