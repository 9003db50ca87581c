//! What a test sets in the platform its guest reads, besides backends: config store
//! entries ([`ConfigStore`]) and the client's geolocation ([`Geo`]). Changes are the test's
//! own (no other test sees them) and reach the guest at its next invocation; none compiles
//! anything.

use std::collections::BTreeMap;
use std::net::IpAddr;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::edge::Edge;
use crate::wire::PlatformChange;

/// The longest key a config store accepts (Fastly's limit, which viceroy enforces too).
pub const CONFIG_KEY_MAX_CHARS: usize = 256;
/// The longest value a config store accepts.
pub const CONFIG_VALUE_MAX_CHARS: usize = 8000;

/// A config store of the service, as this test sees it: starts with what `fastly.toml`
/// declares, and every change is this test's alone. Get one with
/// [`Edge::config_store`].
///
/// ```no_run
/// # async fn f(edge: edge_test_core::Edge) {
/// edge.config_store("flags").set("new-checkout", "on");
/// let response = edge.get("/checkout").send().await;
/// # }
/// ```
#[must_use = "a config store handle does nothing until `set` or `remove` is called"]
pub struct ConfigStore<'a> {
    pub(crate) edge: &'a Edge,
    pub(crate) name: String,
}

impl ConfigStore<'_> {
    /// Sets `key` to `value` (adding or replacing it) from the next invocation on. Panics,
    /// naming the limit, on a key or value longer than a config store accepts.
    #[track_caller]
    pub fn set(&self, key: &str, value: impl Into<String>) -> &Self {
        let value = value.into();
        self.check_key(key);
        let chars = value.chars().count();
        if chars > CONFIG_VALUE_MAX_CHARS {
            panic!(
                "edge-test: the value for `{key}` in config store `{}` has {chars} characters; \
                 a config store value has at most {CONFIG_VALUE_MAX_CHARS}",
                self.name
            );
        }
        self.change(key, Some(value));
        self
    }

    /// Removes `key` from the next invocation on (whether `fastly.toml` or the test set it).
    #[track_caller]
    pub fn remove(&self, key: &str) -> &Self {
        self.check_key(key);
        self.change(key, None);
        self
    }

    #[track_caller]
    fn check_key(&self, key: &str) {
        check_name(
            key,
            "a key of config store",
            &self.name,
            CONFIG_KEY_MAX_CHARS,
        );
    }

    fn change(&self, key: &str, value: Option<String>) {
        self.edge.change_platform(PlatformChange::ConfigEntry {
            store: self.name.clone(),
            key: key.to_owned(),
            value,
        });
    }
}

/// A secret store of the service, as this test sees it: starts with what `fastly.toml`
/// declares; the test sets or removes secrets before its first request (a secret store is
/// compiled into the guest's context, so the edge starts its guest again with them; each
/// distinct set of secrets is compiled once per run). Get one with [`Edge::secret_store`].
///
/// ```no_run
/// # async fn f(edge: edge_test_core::Edge) {
/// edge.secret_store("credentials").set("origin_token", "rotated-token");
/// let response = edge.get("/todos/1").send().await;
/// # }
/// ```
#[must_use = "a secret store handle does nothing until `set` or `remove` is called"]
pub struct SecretStore<'a> {
    pub(crate) edge: &'a Edge,
    pub(crate) name: String,
}

impl SecretStore<'_> {
    /// Sets secret `key` to `value`. Panics after the test's first request, and on a key
    /// or value Fastly refuses (a key of 1 to 255 characters; a value of at most 64 KiB).
    #[track_caller]
    pub fn set(&self, key: &str, value: impl Into<String>) -> &Self {
        let value = value.into();
        self.check_key(key);
        if value.len() > SECRET_VALUE_MAX_BYTES {
            panic!(
                "edge-test: the secret `{key}` of secret store `{}` has {} bytes; a secret has \
                 at most {SECRET_VALUE_MAX_BYTES}",
                self.name,
                value.len()
            );
        }
        self.change(key, Some(value));
        self
    }

    /// Removes secret `key` (whether `fastly.toml` or the test set it). Panics after the
    /// test's first request.
    #[track_caller]
    pub fn remove(&self, key: &str) -> &Self {
        self.check_key(key);
        self.change(key, None);
        self
    }

    #[track_caller]
    fn check_key(&self, key: &str) {
        check_name(key, "the name of a secret of secret store", &self.name, 255);
    }

    #[track_caller]
    fn change(&self, key: &str, value: Option<String>) {
        let what = format!("setting secret `{key}` of secret store `{}`", self.name);
        self.edge.edit_manifest(&what, |edits| {
            edits
                .secrets
                .entry(self.name.clone())
                .or_default()
                .insert(key.to_owned(), value);
        });
    }
}

/// Panics, naming the limit, unless `name` has 1 to `max_chars` characters.
#[track_caller]
fn check_name(name: &str, what: &str, store: &str, max_chars: usize) {
    if name.is_empty() || name.chars().count() > max_chars {
        panic!(
            "edge-test: {name:?} cannot be {what} `{store}`: it has 1 to {max_chars} characters"
        );
    }
}

/// The largest secret Fastly stores.
const SECRET_VALUE_MAX_BYTES: usize = 64 * 1024;

/// A KV store of the service, as this test sees it: starts with what `fastly.toml` declares;
/// the test's changes and the guest's writes are this test's alone. Get one with
/// [`Edge::kv_store`]. Changes reach the guest at its next invocation; reads see what the
/// guest stored up to its last one.
///
/// ```no_run
/// # async fn f(edge: edge_test_core::Edge) {
/// let tenants = edge.kv_store("tenants");
/// tenants.insert_with_metadata("acme", r#"{"plan":"pro"}"#, "v2");
/// edge.put("/tenants/globex").send().await;
/// let stored = tenants.get("globex").await.expect("the guest stored it");
/// assert_eq!(stored.text(), r#"{"plan":"free"}"#);
/// # }
/// ```
#[must_use = "a KV store handle does nothing until it is used"]
pub struct KvStore<'a> {
    pub(crate) edge: &'a Edge,
    pub(crate) name: String,
}

/// One entry of a KV store: its value and its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    pub value: Bytes,
    pub metadata: Option<String>,
}

impl KvEntry {
    /// The value as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }
}

impl KvStore<'_> {
    /// Inserts `key` (replacing it if present), with no metadata.
    #[track_caller]
    pub fn insert(&self, key: &str, value: impl Into<Bytes>) -> &Self {
        self.insert_entry(key, value.into(), None)
    }

    /// Inserts `key` with `metadata` (what `LookupResponse::metadata` returns).
    #[track_caller]
    pub fn insert_with_metadata(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        metadata: &str,
    ) -> &Self {
        self.insert_entry(key, value.into(), Some(metadata.to_owned()))
    }

    /// Removes `key`, if present.
    #[track_caller]
    pub fn remove(&self, key: &str) -> &Self {
        self.check_key(key);
        self.edge.change_platform(PlatformChange::KvRemove {
            store: self.name.clone(),
            key: key.to_owned(),
        });
        self
    }

    /// Every entry, by key: what `fastly.toml` seeded, the test set and the guest stored.
    pub async fn entries(&self) -> BTreeMap<String, KvEntry> {
        let read = self.edge.read_platform(self.read()).await;
        self.parse(read)
    }

    /// [`entries`](Self::entries), from a plain `fn` test.
    pub fn entries_blocking(&self) -> BTreeMap<String, KvEntry> {
        let read = self.edge.read_platform_blocking(self.read());
        self.parse(read)
    }

    fn read(&self) -> PlatformRead {
        PlatformRead {
            kv_stores: vec![self.name.clone()],
            cache_keys: Vec::new(),
            list_cache: false,
        }
    }

    /// The entry at `key`, if there is one.
    pub async fn get(&self, key: &str) -> Option<KvEntry> {
        self.entries().await.remove(key)
    }

    #[track_caller]
    fn insert_entry(&self, key: &str, value: Bytes, metadata: Option<String>) -> &Self {
        self.check_key(key);
        self.edge.change_platform(PlatformChange::KvInsert {
            store: self.name.clone(),
            key: key.to_owned(),
            value: value.to_vec(),
            metadata,
        });
        self
    }

    #[track_caller]
    fn check_key(&self, key: &str) {
        if let Err(why) = kv_key_problem(key) {
            panic!(
                "edge-test: {key:?} cannot be a key of KV store `{}`: {why}",
                self.name
            );
        }
    }

    fn parse(&self, read: Value) -> BTreeMap<String, KvEntry> {
        read["kv"]
            .get(&self.name)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|entry| {
                let key = entry.get(0)?.as_str()?.to_owned();
                let value: Vec<u8> = serde_json::from_value(entry.get(1)?.clone()).ok()?;
                let metadata = entry.get(2)?.as_str().map(str::to_owned);
                Some((
                    key,
                    KvEntry {
                        value: value.into(),
                        metadata,
                    },
                ))
            })
            .collect()
    }
}

/// What Fastly's device detection reports for a `User-Agent`
/// (`fastly::device_detection::lookup`). Fields left unset read as `None`, as production
/// reads a field it has no data for.
///
/// ```no_run
/// # async fn f(edge: edge_test_core::Edge) {
/// use edge_test_core::Device;
/// let response = edge
///     .get("/")
///     .header("user-agent", "ExamplePhone/1.0")
///     .device(Device::new().brand("Example").mobile(true))
///     .send()
///     .await;
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[must_use]
pub struct Device {
    sections: Map<String, Value>,
}

macro_rules! device_setters {
    ($($(#[$doc:meta])* $name:ident => $section:literal . $field:literal : $ty:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(self, value: $ty) -> Self {
                self.with($section, $field, Value::from(value))
            }
        )*
    };
}

impl Device {
    /// A device nothing is known about; set what the test needs.
    pub fn new() -> Self {
        Self::default()
    }

    device_setters! {
        /// The device's name (`iPhone`).
        name => "device"."name": &str,
        brand => "device"."brand": &str,
        model => "device"."model": &str,
        /// The hardware type (`Mobile Phone`, `Desktop`, ...).
        hwtype => "device"."hwtype": &str,
        mobile => "device"."is_mobile": bool,
        tablet => "device"."is_tablet": bool,
        desktop => "device"."is_desktop": bool,
        smart_tv => "device"."is_smarttv": bool,
        game_console => "device"."is_gameconsole": bool,
        ereader => "device"."is_ereader": bool,
        media_player => "device"."is_mediaplayer": bool,
        tv_player => "device"."is_tvplayer": bool,
        touchscreen => "device"."is_touchscreen": bool,
        /// The browser's name (`Mobile Safari`).
        browser => "user_agent"."name": &str,
        bot => "user_agent"."is_bot": bool,
        bot_name => "user_agent"."bot_name": &str,
        /// The operating system's name (`iOS`).
        os => "os"."name": &str,
    }

    fn with(mut self, section: &str, field: &str, value: Value) -> Self {
        let section = self
            .sections
            .entry(section.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(fields) = section {
            fields.insert(field.to_owned(), value);
        }
        self
    }

    pub(crate) fn change_for(&self, user_agent: &str) -> PlatformChange {
        PlatformChange::Device {
            user_agent: user_agent.to_owned(),
            record: Value::Object(self.sections.clone()).to_string(),
        }
    }
}

/// The TLS connection a request arrives on, as the guest reads it (`get_tls_protocol`,
/// `get_tls_cipher_openssl_name`, `get_tls_client_servername`, `get_tls_ja4`,
/// `get_client_h2_fingerprint`, `get_client_oh_fingerprint`). A request without one is a
/// plain HTTP request, whose facts are absent, as in production.
///
/// ```no_run
/// # async fn f(edge: edge_test_core::Edge) {
/// use edge_test_core::Tls;
/// let response = edge.get("/").tls(Tls::new().protocol("TLSv1.2")).send().await;
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Tls {
    pub(crate) facts: BTreeMap<String, String>,
}

impl Default for Tls {
    fn default() -> Self {
        Self::new()
    }
}

impl Tls {
    /// A TLS 1.3 connection (`TLSv1.3`, `TLS_AES_128_GCM_SHA256`), its server name the
    /// request's host unless set, its raw ClientHello empty (the SDK reads the TLS facts
    /// only when there is one), and no fingerprints.
    pub fn new() -> Self {
        Self {
            facts: BTreeMap::from([
                ("tls_protocol".to_owned(), "TLSv1.3".to_owned()),
                ("tls_cipher".to_owned(), "TLS_AES_128_GCM_SHA256".to_owned()),
                ("tls_client_hello".to_owned(), String::new()),
            ]),
        }
    }

    fn with(mut self, fact: &str, value: &str) -> Self {
        self.facts.insert(fact.to_owned(), value.to_owned());
        self
    }

    /// `TLSv1.2`, `TLSv1.3`, ...
    pub fn protocol(self, protocol: &str) -> Self {
        self.with("tls_protocol", protocol)
    }

    /// The cipher's OpenSSL name (`ECDHE-RSA-AES128-GCM-SHA256`).
    pub fn cipher(self, openssl_name: &str) -> Self {
        self.with("tls_cipher", openssl_name)
    }

    /// The SNI server name the client sent.
    pub fn server_name(self, name: &str) -> Self {
        self.with("tls_server_name", name)
    }

    /// The client's JA4 fingerprint.
    pub fn ja4(self, fingerprint: &str) -> Self {
        self.with("tls_ja4", fingerprint)
    }

    /// The client's HTTP/2 fingerprint.
    pub fn h2_fingerprint(self, fingerprint: &str) -> Self {
        self.with("h2_fingerprint", fingerprint)
    }

    /// The client's original-header fingerprint.
    pub fn oh_fingerprint(self, fingerprint: &str) -> Self {
        self.with("oh_fingerprint", fingerprint)
    }
}

/// What a platform-only request reads.
pub(crate) struct PlatformRead {
    pub(crate) kv_stores: Vec<String>,
    pub(crate) cache_keys: Vec<Vec<u8>>,
    pub(crate) list_cache: bool,
}

/// The guest's core cache (`fastly::cache::core`) as this test sees it: it starts empty;
/// entries the test inserts are found by the guest's next lookup, purges take effect before
/// its next invocation, and [`get`](Self::get) reads what is stored now. Get it with
/// [`Edge::cache`].
///
/// ```no_run
/// # async fn f(edge: edge_test_core::Edge) {
/// use std::time::Duration;
/// use edge_test_core::CacheSeed;
/// edge.cache().insert(
///     CacheSeed::new("todo-1", r#"{"id":1}"#, Duration::from_secs(60)).surrogate_key("todos"),
/// );
/// edge.get("/todos/1").send().await; // a hit: the origin's mock is never called
/// edge.cache().purge_surrogate_key("todos");
/// assert!(edge.cache().get("todo-1").await.is_none());
/// # }
/// ```
///
/// [`entries`](Self::entries) lists what the guest and the test stored (edge-test follows the
/// guest's cache calls to know the keys and surrogate keys, which viceroy-lib 0.22 cannot
/// list), and [`advance`](Self::advance) makes time pass for it without sleeping.
#[must_use = "a cache handle does nothing until it is used"]
pub struct CacheControl<'a> {
    pub(crate) edge: &'a Edge,
}

impl CacheControl<'_> {
    /// Stores `seed`, replacing what the key held: the guest's next lookup finds it.
    #[track_caller]
    pub fn insert(&self, seed: CacheSeed) -> &Self {
        check_cache_key(&seed.key);
        self.edge.change_platform(PlatformChange::CacheInsert {
            key: seed.key.to_vec(),
            body: seed.body.to_vec(),
            ttl: seed.ttl,
            age: seed.age,
            stale_while_revalidate: seed.stale_while_revalidate,
            surrogate_keys: seed.surrogate_keys,
            user_metadata: seed.user_metadata.to_vec(),
        });
        self
    }

    /// Purges every entry tagged with surrogate key `key` (what the guest's
    /// `fastly::http::purge::purge_surrogate_key` does).
    #[track_caller]
    pub fn purge_surrogate_key(&self, key: &str) -> &Self {
        check_surrogate_key(key);
        self.edge
            .change_platform(PlatformChange::CachePurgeSurrogateKey {
                key: key.to_owned(),
            });
        self
    }

    /// Purges the entry at `key` (the one stored for requests without `Vary`d headers).
    #[track_caller]
    pub fn purge_key(&self, key: impl AsRef<[u8]>) -> &Self {
        let key = key.as_ref();
        check_cache_key(key);
        self.edge
            .change_platform(PlatformChange::CachePurgeKey { key: key.to_vec() });
        self
    }

    /// What the cache holds at `key` now (after the test's pending changes), if anything.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Option<CachedObject> {
        let key = key.as_ref().to_vec();
        let read = self.edge.read_platform(Self::read(&key)).await;
        CachedObject::parse(&read["cache"][0])
    }

    /// [`get`](Self::get), from a plain `fn` test.
    pub fn get_blocking(&self, key: impl AsRef<[u8]>) -> Option<CachedObject> {
        let key = key.as_ref().to_vec();
        let read = self.edge.read_platform_blocking(Self::read(&key));
        CachedObject::parse(&read["cache"][0])
    }

    /// Every entry the cache holds that the guest or the test stored, by key (after the
    /// test's pending changes): what a request without varying headers would find.
    pub async fn entries(&self) -> BTreeMap<Bytes, CachedObject> {
        Self::listed(self.edge.read_platform(Self::list()).await)
    }

    /// [`entries`](Self::entries), from a plain `fn` test.
    pub fn entries_blocking(&self) -> BTreeMap<Bytes, CachedObject> {
        Self::listed(self.edge.read_platform_blocking(Self::list()))
    }

    /// Makes `by` pass for every entry [`entries`](Self::entries) lists, from the next
    /// invocation on: each is stored again `by` older, with its body, TTL, user metadata,
    /// vary rule, surrogate keys and stale-while-revalidate period, so an entry past its TTL
    /// is stale (or gone) as it would be after waiting. The cache's own clock keeps running:
    /// entries the test cannot list (variants stored for varying request headers) do not age.
    pub fn advance(&self, by: std::time::Duration) -> &Self {
        self.edge
            .change_platform(PlatformChange::CacheAdvance { by });
        self
    }

    fn list() -> PlatformRead {
        PlatformRead {
            kv_stores: Vec::new(),
            cache_keys: Vec::new(),
            list_cache: true,
        }
    }

    fn listed(read: Value) -> BTreeMap<Bytes, CachedObject> {
        read["cache_list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| {
                let key: Vec<u8> = serde_json::from_value(entry["key"].clone()).ok()?;
                Some((Bytes::from(key), CachedObject::parse(entry)?))
            })
            .collect()
    }

    fn read(key: &[u8]) -> PlatformRead {
        check_cache_key(key);
        PlatformRead {
            kv_stores: Vec::new(),
            cache_keys: vec![key.to_vec()],
            list_cache: false,
        }
    }
}

/// The longest core-cache key (viceroy's and Fastly's limit).
const CACHE_KEY_MAX_BYTES: usize = 4096;

#[track_caller]
fn check_cache_key(key: &[u8]) {
    if key.len() > CACHE_KEY_MAX_BYTES {
        panic!(
            "edge-test: a cache key of {} bytes is too long: a cache key has at most \
             {CACHE_KEY_MAX_BYTES} bytes",
            key.len()
        );
    }
}

#[track_caller]
fn check_surrogate_key(key: &str) {
    if key.is_empty() || key.len() > 1024 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        panic!(
            "edge-test: {key:?} cannot be a surrogate key: a surrogate key has 1 to 1024 \
             visible ASCII characters (no spaces)"
        );
    }
}

/// A core-cache entry for a test to store before its guest looks it up.
#[derive(Debug, Clone)]
#[must_use]
pub struct CacheSeed {
    key: Bytes,
    body: Bytes,
    ttl: std::time::Duration,
    age: std::time::Duration,
    stale_while_revalidate: std::time::Duration,
    surrogate_keys: Vec<String>,
    user_metadata: Bytes,
}

impl CacheSeed {
    /// An entry at `key` with `body`, fresh for `ttl` from now.
    pub fn new(key: impl Into<Bytes>, body: impl Into<Bytes>, ttl: std::time::Duration) -> Self {
        Self {
            key: key.into(),
            body: body.into(),
            ttl,
            age: std::time::Duration::ZERO,
            stale_while_revalidate: std::time::Duration::ZERO,
            surrogate_keys: Vec::new(),
            user_metadata: Bytes::new(),
        }
    }

    /// How old the entry already is: an entry stored `age` ago (its TTL counts from then).
    pub fn age(mut self, age: std::time::Duration) -> Self {
        self.age = age;
        self
    }

    /// How long past its TTL the entry may still be served while it is revalidated.
    pub fn stale_while_revalidate(mut self, period: std::time::Duration) -> Self {
        self.stale_while_revalidate = period;
        self
    }

    /// Tags the entry with surrogate key `key` (repeat for several). Panics on a key Fastly
    /// would refuse.
    #[track_caller]
    pub fn surrogate_key(mut self, key: &str) -> Self {
        check_surrogate_key(key);
        self.surrogate_keys.push(key.to_owned());
        self
    }

    /// The entry's user metadata (what `Found::user_metadata` returns).
    pub fn user_metadata(mut self, metadata: impl Into<Bytes>) -> Self {
        self.user_metadata = metadata.into();
        self
    }
}

/// What the core cache holds at a key, as [`CacheControl::get`] read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedObject {
    pub body: Bytes,
    /// How long the entry is fresh for, from its storage (its TTL).
    pub max_age: std::time::Duration,
    /// How old it is now.
    pub age: std::time::Duration,
    pub user_metadata: Bytes,
    /// The body's length, when it was known on insertion.
    pub length: Option<u64>,
    /// Its surrogate keys, when edge-test saw the write that stored it (every write the
    /// guest or the test made; `None` for an entry stored otherwise).
    pub surrogate_keys: Option<Vec<String>>,
    /// How long past its TTL it may be served while revalidated, when edge-test saw the
    /// write that stored it.
    pub stale_while_revalidate: Option<std::time::Duration>,
}

impl CachedObject {
    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// How much longer it is fresh (zero once stale).
    pub fn ttl_left(&self) -> std::time::Duration {
        self.max_age.saturating_sub(self.age)
    }

    fn parse(entry: &Value) -> Option<Self> {
        let bytes = |name: &str| -> Bytes {
            serde_json::from_value::<Vec<u8>>(entry[name].clone())
                .unwrap_or_default()
                .into()
        };
        let nanos = |name: &str| std::time::Duration::from_nanos(entry[name].as_u64().unwrap_or(0));
        entry.is_object().then(|| Self {
            body: bytes("body"),
            max_age: nanos("max_age_ns"),
            age: nanos("age_ns"),
            user_metadata: bytes("user_metadata"),
            length: entry["length"].as_u64(),
            surrogate_keys: serde_json::from_value(entry["surrogate_keys"].clone()).ok(),
            stale_while_revalidate: entry["stale_while_revalidate_ns"]
                .as_u64()
                .map(std::time::Duration::from_nanos),
        })
    }
}

/// Why Fastly's KV store refuses `key`, if it does (its documented rules, which viceroy
/// enforces too).
fn kv_key_problem(key: &str) -> Result<(), &'static str> {
    if key.is_empty() || key.len() > 1024 {
        return Err("a key has 1 to 1024 bytes");
    }
    if key.starts_with(".well-known/acme-challenge") {
        return Err("a key may not start with .well-known/acme-challenge");
    }
    let dotted = |dots: &str| {
        key == dots || key.contains(&format!("{dots}/")) || key.ends_with(&format!("/{dots}"))
    };
    if dotted(".") || dotted("..") {
        return Err("a key may not be or hold a `.` or `..` path segment");
    }
    if key.contains(['\r', '\n', '#', ';', '?', '^', '|']) {
        return Err("a key may not contain a carriage return, a newline or any of # ; ? ^ |");
    }
    Ok(())
}

/// The geolocation Fastly reports for a client address (`fastly::geo::geo_lookup`). Fields
/// left unset read as production reads an address it knows nothing about: empty strings,
/// zeros, 999.0 for latitude and longitude, no region and no UTC offset.
///
/// ```no_run
/// # async fn f(edge: edge_test_core::Edge) {
/// use edge_test_core::Geo;
/// let response = edge
///     .get("/")
///     .client_ip("203.0.113.9".parse().unwrap())
///     .geo(Geo::new().country_code("DE").city("Berlin"))
///     .send()
///     .await;
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct Geo {
    fields: Map<String, Value>,
}

impl Default for Geo {
    fn default() -> Self {
        Self::new()
    }
}

macro_rules! geo_setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.fields.insert(stringify!($name).to_owned(), Value::from(value));
                self
            }
        )*
    };
}

impl Geo {
    /// A record of an address production knows nothing about; set what the test needs.
    pub fn new() -> Self {
        let unknown = serde_json::json!({
            "as_name": "", "as_number": 0, "area_code": 0, "city": "",
            "conn_speed": "", "conn_type": "", "continent": "",
            "country_code": "", "country_code3": "", "country_name": "",
            "latitude": 999.0, "longitude": 999.0, "metro_code": 0, "postal_code": "",
            "proxy_description": "", "proxy_type": "", "region": null,
            // Fastly's "no offset" value: the SDK reads it as `None`.
            "utc_offset": 9999,
        });
        let Value::Object(fields) = unknown else {
            unreachable!("a JSON object literal")
        };
        Self { fields }
    }

    geo_setters! {
        /// The autonomous system's organization (`as_name`).
        as_name: &str,
        as_number: u32,
        area_code: u16,
        city: &str,
        /// `broadband`, `cable`, `dialup`, `mobile`, `oc12`, ... (Fastly's names).
        conn_speed: &str,
        /// `wired`, `wifi`, `mobile`, `dialup`, `satellite`, ... (Fastly's names).
        conn_type: &str,
        /// `AF`, `AN`, `AS`, `EU`, `NA`, `OC` or `SA`.
        continent: &str,
        /// ISO 3166-1 alpha-2 (`DE`).
        country_code: &str,
        /// ISO 3166-1 alpha-3 (`DEU`).
        country_code3: &str,
        country_name: &str,
        latitude: f64,
        longitude: f64,
        metro_code: i64,
        postal_code: &str,
        /// `cloud`, `vpn`, `anonymous`, ... (Fastly's names).
        proxy_description: &str,
        /// `anonymous`, `hosting`, `corporate`, ... (Fastly's names).
        proxy_type: &str,
        /// ISO 3166-2 subdivision code, without the country (`BE` for Berlin).
        region: &str,
    }

    /// The UTC offset as Fastly writes it, hours and minutes run together: `200` for +02:00.
    pub fn utc_offset(mut self, hhmm: i32) -> Self {
        self.fields
            .insert("utc_offset".to_owned(), Value::from(hhmm));
        self
    }

    pub(crate) fn change_for(&self, ip: IpAddr) -> PlatformChange {
        PlatformChange::Geo {
            ip,
            record: Value::Object(self.fields.clone()).to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_fields_read_as_an_unknown_address() {
        let PlatformChange::Geo { record, .. } = Geo::new()
            .country_code("DE")
            .latitude(52.5)
            .change_for("192.0.2.1".parse().unwrap())
        else {
            panic!("a geo change")
        };
        let record: Value = serde_json::from_str(&record).unwrap();
        assert_eq!(record["country_code"], "DE");
        assert_eq!(record["latitude"], 52.5);
        assert_eq!(record["city"], "");
        assert_eq!(record["longitude"], 999.0);
        assert_eq!(record["region"], Value::Null);
        assert_eq!(record["utc_offset"], 9999);
        assert_eq!(record.as_object().unwrap().len(), 18);
    }
}
