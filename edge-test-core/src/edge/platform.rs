//! What an `Edge` offers besides requests and backends: the platform its guest reads
//! (stores, cache, geolocation, devices, dynamic backends), and the manifest edits that
//! start its guest again before the first request.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Edge;
use crate::error::EdgeError;
use crate::executor::{self, InvocationReport, InvocationRequest, SessionSpec};
use crate::manifest_edits::{ManifestEdits, StoreKind};
use crate::mock::MockBackend;
use crate::platform::{CacheControl, ConfigStore, Device, Geo, KvStore, PlatformRead, SecretStore};
use crate::wire::PlatformChange;

impl Edge {
    /// Config store `name` as this test sees it: set or remove its entries, from the next
    /// invocation on. Panics, listing the declared stores, when neither `fastly.toml` nor
    /// the test ([`declare_config_store`](Self::declare_config_store)) declares it.
    #[track_caller]
    pub fn config_store(&self, name: &str) -> ConfigStore<'_> {
        self.local_only(|| format!("controls config store `{name}`"));
        self.check_declared(StoreKind::Config, name);
        ConfigStore {
            edge: self,
            name: name.to_owned(),
        }
    }

    /// KV store `name` as this test sees it: insert and remove entries (from the next
    /// invocation on) and read what the guest stored. Panics, listing the declared stores,
    /// when neither `fastly.toml` nor the test ([`declare_kv_store`](Self::declare_kv_store))
    /// declares it.
    #[track_caller]
    pub fn kv_store(&self, name: &str) -> KvStore<'_> {
        self.local_only(|| format!("controls KV store `{name}`"));
        self.check_declared(StoreKind::Kv, name);
        KvStore {
            edge: self,
            name: name.to_owned(),
        }
    }

    /// Secret store `name` as this test sees it: set or remove its secrets before the first
    /// request. Panics, listing the declared stores, when neither `fastly.toml` nor the test
    /// ([`declare_secret_store`](Self::declare_secret_store)) declares it.
    #[track_caller]
    pub fn secret_store(&self, name: &str) -> SecretStore<'_> {
        self.local_only(|| format!("controls secret store `{name}`"));
        self.check_declared(StoreKind::Secret, name);
        SecretStore {
            edge: self,
            name: name.to_owned(),
        }
    }

    /// Declares an empty config store `fastly.toml` does not (nothing, if it does), for this
    /// test: before its first request, as a store is part of the compiled guest.
    #[track_caller]
    pub fn declare_config_store(&self, name: &str) -> ConfigStore<'_> {
        self.local_only(|| format!("declares config store `{name}`"));
        self.declare(StoreKind::Config, name);
        self.config_store(name)
    }

    /// Declares an empty KV store `fastly.toml` does not (nothing, if it does), for this
    /// test: before its first request, as a store is part of the compiled guest.
    #[track_caller]
    pub fn declare_kv_store(&self, name: &str) -> KvStore<'_> {
        self.local_only(|| format!("declares KV store `{name}`"));
        self.declare(StoreKind::Kv, name);
        self.kv_store(name)
    }

    /// Declares an empty secret store `fastly.toml` does not (nothing, if it does), for this
    /// test: before its first request, as a store is part of the compiled guest.
    #[track_caller]
    pub fn declare_secret_store(&self, name: &str) -> SecretStore<'_> {
        self.local_only(|| format!("declares secret store `{name}`"));
        self.declare(StoreKind::Secret, name);
        self.secret_store(name)
    }

    /// The stores of `kind` this test's guest has: `fastly.toml`'s and the test's.
    fn declared_stores(&self, kind: StoreKind) -> Vec<String> {
        let manifest = self.inner.service.manifest.as_ref();
        let mut names: Vec<String> = manifest
            .map(|m| match kind {
                StoreKind::Config => m.config_stores.clone(),
                StoreKind::Kv => m.kv_stores.clone(),
                StoreKind::Secret => m.secret_stores.clone(),
            })
            .unwrap_or_default();
        let edits = crate::sync::lock(&self.inner.edits);
        names.extend(
            edits
                .0
                .declared
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, name)| name.clone()),
        );
        names.sort();
        names.dedup();
        names
    }

    #[track_caller]
    fn check_declared(&self, kind: StoreKind, name: &str) {
        let declared = self.declared_stores(kind);
        if !declared.iter().any(|store| store == name) {
            let what = kind.name();
            panic!(
                "edge-test: service `{}` declares no {what} `{name}`; declared {what}s: {}",
                self.service(),
                if declared.is_empty() {
                    format!(
                        "none (declare one under [local_server.{}] in fastly.toml, or with \
                         `edge.declare_{}(..)`)",
                        match kind {
                            StoreKind::Config => "config_stores",
                            StoreKind::Kv => "kv_stores",
                            StoreKind::Secret => "secret_stores",
                        },
                        what.replace(' ', "_").to_lowercase(),
                    )
                } else {
                    declared.join(", ")
                }
            )
        }
    }

    #[track_caller]
    fn declare(&self, kind: StoreKind, name: &str) {
        let valid = !name.is_empty()
            && name.len() <= 255
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid {
            panic!(
                "edge-test: {name:?} cannot name a {}: use 1 to 255 letters, digits, `-`, `_` \
                 or `.`",
                kind.name()
            );
        }
        self.edit_manifest(&format!("declaring {} `{name}`", kind.name()), |edits| {
            edits.declared.insert((kind, name.to_owned()));
        });
    }

    /// Records an edit of the manifest, which the guest is started again with before the
    /// first request. Panics, saying why, once a request has gone out.
    #[track_caller]
    pub(crate) fn edit_manifest(&self, what: &str, edit: impl FnOnce(&mut ManifestEdits)) {
        if self.inner.session_used.load(Ordering::SeqCst) {
            panic!(
                "edge-test: {what} after the test's first request: it is compiled into the \
                 guest's context, which the first request started; do it before the first \
                 request (config store and KV entries, the cache and geolocation can change at \
                 any time)"
            );
        }
        edit(&mut crate::sync::lock(&self.inner.edits).0);
    }

    /// The session to send a request to: started again from the edited manifest first, when
    /// the test edited it since. Panics, naming the error, when that guest cannot start.
    pub(super) fn ready_session(&self) -> Arc<executor::Session> {
        self.inner.session_used.store(true, Ordering::SeqCst);
        let edits = {
            let mut edits = crate::sync::lock(&self.inner.edits);
            if edits.0 == edits.1 {
                return self.session();
            }
            edits.1 = edits.0.clone();
            edits.0.clone()
        };
        let spec = self
            .edited_spec(&edits)
            .unwrap_or_else(|e| panic!("edge-test: the test's edits of fastly.toml: {e}"));
        let session = executor::Session::start(spec).unwrap_or_else(|e| {
            panic!("edge-test: the guest did not start with the test's edits of fastly.toml: {e}")
        });
        let session = Arc::new(session);
        *crate::sync::lock(&self.inner.session) = session.clone();
        session
    }

    fn edited_spec(&self, edits: &ManifestEdits) -> Result<SessionSpec, EdgeError> {
        let mut spec = self.inner.spec.clone();
        let text = edits
            .apply(spec.fastly_toml.as_deref())
            .map_err(|reason| EdgeError::Host { reason })?;
        spec.fastly_toml = Some(text);
        if spec.kv_guest.is_none() && !self.declared_stores(StoreKind::Kv).is_empty() {
            spec.kv_guest = Some(crate::guest_build::kv_guest_wasm()?);
        }
        Ok(spec)
    }

    /// Applies the test's pending changes, then reads the KV stores and the cache keys
    /// `read` names, between invocations: `{"kv": {..}, "cache": [..]}`.
    pub(crate) async fn read_platform(&self, read: PlatformRead) -> serde_json::Value {
        let _turn = self.inner.turn.lock().await;
        self.settle_abandoned().await;
        let report = self.ready_session().run(self.platform_request(read)).await;
        Self::platform_read(report)
    }

    /// [`read_platform`](Self::read_platform) for blocking callers.
    pub(crate) fn read_platform_blocking(&self, read: PlatformRead) -> serde_json::Value {
        let _turn = self.inner.turn.blocking_lock();
        self.settle_abandoned_blocking();
        let report = self
            .ready_session()
            .run_blocking(self.platform_request(read));
        Self::platform_read(report)
    }

    fn platform_request(&self, read: PlatformRead) -> InvocationRequest {
        InvocationRequest {
            guest_timeout: *crate::sync::lock(&self.inner.guest_timeout),
            platform: std::mem::take(&mut *crate::sync::lock(&self.inner.platform_changes)),
            platform_only: true,
            read_kv: read.kv_stores,
            read_cache: read.cache_keys,
            list_cache: read.list_cache,
            dynamic_dispatcher: self.inner.mocks.dynamic_dispatcher(),
            ..Default::default()
        }
    }

    fn platform_read(report: InvocationReport) -> serde_json::Value {
        if let executor::Outcome::NotRun { reason } = &report.outcome {
            panic!("edge-test: could not read the platform: {reason}");
        }
        report
            .platform_read
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_else(|| {
                panic!("edge-test: a platform read came back empty (a bug in edge-test)")
            })
    }

    /// The guest's core cache (`fastly::cache::core`), as this test sees it: seed entries,
    /// purge, and look up what the guest stored. Starts empty, as every test's does.
    pub fn cache(&self) -> CacheControl<'_> {
        self.local_only(|| "controls the cache".to_owned());
        CacheControl { edge: self }
    }

    /// The geolocation the guest reads for `ip` (`fastly::geo::geo_lookup`), from the next
    /// invocation on. For the client's own address, [`RequestBuilder::geo`] reads better.
    pub fn set_geo(&self, ip: IpAddr, geo: &Geo) {
        self.local_only(|| "sets a geolocation record".to_owned());
        self.change_platform(geo.change_for(ip));
    }

    /// What device detection reports for `user_agent` (`fastly::device_detection::lookup`),
    /// from the next invocation on. For the request's own `User-Agent`,
    /// [`RequestBuilder::device`] reads better.
    pub fn set_device(&self, user_agent: &str, device: &Device) {
        self.local_only(|| "sets a device detection record".to_owned());
        self.change_platform(device.change_for(user_agent));
    }

    pub(crate) fn change_platform(&self, change: PlatformChange) {
        crate::sync::lock(&self.inner.platform_changes).push(change);
    }

    /// The mocks of the guest's dynamic backends to `target` (`fastly::Backend::builder(name,
    /// target)`), mounted like a declared backend's: the guest's `finish()` succeeds and its
    /// requests reach these mocks, with how it registered the backend in
    /// [`BackendRequest::dynamic`](crate::BackendRequest::dynamic). `target` is as the guest
    /// names it: `host` or `host:port`; `api.example.com:443` also takes a guest's
    /// `api.example.com` with TLS (`:80` without). A dynamic backend to a target with no
    /// mocks fails the test, naming it. Panics on a target that is not a host or host:port.
    #[track_caller]
    pub fn dynamic_backend(&self, target: &str) -> MockBackend {
        self.local_only(|| format!("mocks dynamic backend {target}"));
        if let Err(why) = check_target(target) {
            panic!("edge-test: {target:?} is not a dynamic backend target: {why}");
        }
        self.inner.mocks.dynamic_backend(target)
    }
}

/// Why `target` is not `host` or `host:port`, as `Backend::builder` takes it.
fn check_target(target: &str) -> Result<(), String> {
    let authority: http::uri::Authority = target
        .parse()
        .map_err(|e| format!("{e}; use `host` or `host:port`"))?;
    if authority.as_str().contains('@') {
        return Err("it holds user information; use `host` or `host:port`".to_owned());
    }
    if authority.host().is_empty() {
        return Err("it has no host".to_owned());
    }
    if authority.port_u16() == Some(0) || (target.ends_with(':')) {
        return Err("its port is missing or 0".to_owned());
    }
    Ok(())
}
