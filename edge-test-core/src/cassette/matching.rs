//! How a live request finds its recorded interaction: the first unused one that matches on
//! the chosen fields, so independent requests may come in any order while identical ones are
//! replayed in their recorded order (rpcreplay's rule). When none matches, the closest say
//! what differs.

use super::CassetteRequest;
use super::file::Interaction;

/// A part of a request that must be the same for a recorded interaction to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchOn {
    Method,
    Path,
    /// The query string, parameter order included.
    Query,
    /// The body: as JSON when both are JSON (key order and spacing aside), else as bytes.
    Body,
    /// A header's values (name in any case).
    Header(String),
}

impl MatchOn {
    pub(super) const DEFAULT: [MatchOn; 4] = [
        MatchOn::Method,
        MatchOn::Path,
        MatchOn::Query,
        MatchOn::Body,
    ];

    /// What differs in this part between a recorded request and a live one, if anything.
    fn difference(&self, recorded: &CassetteRequest, live: &CassetteRequest) -> Option<String> {
        match self {
            MatchOn::Method => (recorded.method != live.method)
                .then(|| format!("method {} here, {} recorded", live.method, recorded.method)),
            MatchOn::Path => (recorded.path != live.path)
                .then(|| format!("path {} here, {} recorded", live.path, recorded.path)),
            MatchOn::Query => (recorded.query != live.query).then(|| {
                format!(
                    "query {} here, {} recorded",
                    shown(live.query.as_deref()),
                    shown(recorded.query.as_deref())
                )
            }),
            MatchOn::Body => (!same_body(&recorded.body, &live.body)).then(|| {
                format!(
                    "body {} here, {} recorded",
                    excerpt(&live.body),
                    excerpt(&recorded.body)
                )
            }),
            MatchOn::Header(name) => {
                let values = |r: &CassetteRequest| -> Vec<String> {
                    r.headers
                        .iter()
                        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.clone())
                        .collect()
                };
                let (here, there) = (values(live), values(recorded));
                (here != there)
                    .then(|| format!("header `{name}` {here:?} here, {there:?} recorded"))
            }
        }
    }

    fn name(&self) -> String {
        match self {
            MatchOn::Method => "method".into(),
            MatchOn::Path => "path".into(),
            MatchOn::Query => "query".into(),
            MatchOn::Body => "body".into(),
            MatchOn::Header(name) => format!("header `{name}`"),
        }
    }
}

fn shown(query: Option<&str>) -> String {
    query.map_or_else(|| "(none)".to_owned(), |q| format!("?{q}"))
}

fn same_body(a: &[u8], b: &[u8]) -> bool {
    if a == b {
        return true;
    }
    match (
        serde_json::from_slice::<serde_json::Value>(a),
        serde_json::from_slice::<serde_json::Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn excerpt(body: &[u8]) -> String {
    if body.is_empty() {
        return "(empty)".to_owned();
    }
    let text = String::from_utf8_lossy(body);
    let short: String = text.chars().take(60).collect();
    if short.len() < text.len() {
        format!("{short:?}...")
    } else {
        format!("{short:?}")
    }
}

pub(super) fn matches(on: &[MatchOn], recorded: &CassetteRequest, live: &CassetteRequest) -> bool {
    on.iter()
        .all(|part| part.difference(recorded, live).is_none())
}

pub(super) fn describe(on: &[MatchOn]) -> String {
    on.iter().map(MatchOn::name).collect::<Vec<_>>().join(", ")
}

/// The three unused interactions that differ from `live` in the fewest parts, each with what
/// differs, as lines of a failure report (empty when the cassette has none left).
pub(super) fn closest(
    on: &[MatchOn],
    interactions: &[Interaction],
    used: &[bool],
    live: &CassetteRequest,
) -> String {
    let mut candidates: Vec<(usize, Vec<String>)> = interactions
        .iter()
        .enumerate()
        .filter(|(i, _)| !used[*i])
        .map(|(i, interaction)| {
            let differences = on
                .iter()
                .filter_map(|part| part.difference(&interaction.request, live))
                .collect();
            (i, differences)
        })
        .collect();
    if candidates.is_empty() {
        let all = interactions.len();
        return format!("\n  All {all} recorded interaction(s) were already replayed.");
    }
    candidates.sort_by_key(|(i, d)| (d.len(), *i));
    let mut report = String::from("\n  Closest recorded:");
    for (i, differences) in candidates.into_iter().take(3) {
        report.push_str(&format!(
            "\n    #{} {}: {}",
            i + 1,
            interactions[i].request.summary(),
            differences.join("; ")
        ));
    }
    report
}
