//! The platform data a test sets per test (config store entries, geolocation records),
//! served to the guest from files viceroy re-reads on every open or lookup.
//!
//! Why files: viceroy-lib 0.22 cannot change a finished context's stores, but a config
//! store or a geolocation table backed by a JSON file is read again each time the guest
//! opens it (`viceroy_compat` tests this). So the context is compiled once with each of them
//! pointing at `/proc/self/fd/<n>`, an anonymous memory file (memfd) this module holds, and
//! a test's change rewrites that file before its next invocation: no compile.
//!
//! Why `/proc/self/fd`: the path is fixed when the context is compiled, yet every forked
//! worker must read its own content. `/proc/self` is the reading process, so each worker,
//! before its guest runs, puts a fresh memory file of its own at the same descriptor number
//! ([`PlatformFiles::make_private`]); the template's files are never written after it is
//! compiled. (Not lazily, at the first write: the fork closes every descriptor but the
//! test's connection, so a worker's numbers must be filled again before anything opens
//! one.) In process, each session compiles its own context and holds its own files.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::{MemfdFlags, memfd_create};
use serde_json::{Map, Value};

use crate::wire::PlatformChange;

/// One JSON object in a memory file at a fixed descriptor number.
struct JsonFile {
    fd: OwnedFd,
    content: Map<String, Value>,
}

impl JsonFile {
    fn new(content: Map<String, Value>) -> std::io::Result<Self> {
        let fd = fresh_memfd(&content)?;
        Ok(Self { fd, content })
    }

    /// Where viceroy reads it: the same path in every process, each reading its own file.
    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// Puts a new memory file with the same content at this descriptor number, so that
    /// later writes reach this process's file only (a forked worker shares its template's
    /// file until then).
    fn make_private(&mut self) -> std::io::Result<()> {
        let fresh = fresh_memfd(&self.content)?;
        rustix::io::dup2(&fresh, &mut self.fd)?;
        Ok(())
    }

    fn set(&mut self, key: String, value: Option<Value>) -> std::io::Result<()> {
        match value {
            Some(value) => self.content.insert(key, value),
            None => self.content.remove(&key),
        };
        self.rewrite()
    }

    fn replace(&mut self, content: Map<String, Value>) -> std::io::Result<()> {
        self.content = content;
        self.rewrite()
    }

    fn rewrite(&self) -> std::io::Result<()> {
        let text = serde_json::to_vec(&self.content).expect("a JSON map serializes");
        rustix::fs::ftruncate(&self.fd, 0)?;
        write_all_at(&self.fd, &text)
    }
}

fn fresh_memfd(content: &Map<String, Value>) -> std::io::Result<OwnedFd> {
    let fd = memfd_create("edge-test-platform", MemfdFlags::CLOEXEC)?;
    let text = serde_json::to_vec(content).expect("a JSON map serializes");
    write_all_at(&fd, &text)?;
    Ok(fd)
}

fn write_all_at(fd: &OwnedFd, mut bytes: &[u8]) -> std::io::Result<()> {
    let mut offset = 0u64;
    while !bytes.is_empty() {
        let n = rustix::io::pwrite(fd, bytes, offset)?;
        bytes = &bytes[n..];
        offset += n as u64;
    }
    Ok(())
}

/// The files behind a context's config stores and geolocation table.
pub(crate) struct PlatformFiles {
    config_stores: BTreeMap<String, JsonFile>,
    geolocation: JsonFile,
    device_detection: JsonFile,
}

impl PlatformFiles {
    /// Files holding what `fastly.toml` declares: each config store's entries, the
    /// geolocation records by address and the device detection records by user agent.
    pub(crate) fn new(
        config_stores: BTreeMap<String, Map<String, Value>>,
        geolocation: Map<String, Value>,
        device_detection: Map<String, Value>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            config_stores: config_stores
                .into_iter()
                .map(|(name, content)| Ok((name, JsonFile::new(content)?)))
                .collect::<std::io::Result<_>>()?,
            geolocation: JsonFile::new(geolocation)?,
            device_detection: JsonFile::new(device_detection)?,
        })
    }

    pub(crate) fn config_store_paths(&self) -> impl Iterator<Item = (&String, PathBuf)> {
        self.config_stores
            .iter()
            .map(|(name, file)| (name, file.path()))
    }

    pub(crate) fn geolocation_path(&self) -> PathBuf {
        self.geolocation.path()
    }

    pub(crate) fn device_detection_path(&self) -> PathBuf {
        self.device_detection.path()
    }

    /// Gives this process files of its own (see the module's docs). A forked worker calls
    /// it before its guest runs.
    pub(crate) fn make_private(&mut self) -> std::io::Result<()> {
        for file in self.config_stores.values_mut() {
            file.make_private()?;
        }
        self.device_detection.make_private()?;
        self.geolocation.make_private()
    }

    /// Applies a test's changes, in order. `Err` says which could not be applied.
    pub(crate) fn apply(&mut self, changes: Vec<PlatformChange>) -> Result<(), String> {
        for change in changes {
            match change {
                PlatformChange::ConfigEntry { store, key, value } => {
                    let file = self.config_stores.get_mut(&store).ok_or_else(|| {
                        format!("the guest's context has no config store `{store}`")
                    })?;
                    file.set(key, value.map(Value::String))
                        .map_err(|e| format!("could not write config store `{store}`: {e}"))?;
                }
                PlatformChange::Geo { ip, record } => {
                    let record: Value = serde_json::from_str(&record)
                        .map_err(|e| format!("a geolocation record is not JSON: {e}"))?;
                    self.geolocation
                        .set(address_key(ip), Some(record))
                        .map_err(|e| format!("could not write the geolocation table: {e}"))?;
                }
                PlatformChange::Downstream { facts } => {
                    let store = super::module_rewrite::DOWNSTREAM_STORE;
                    let file = self
                        .config_stores
                        .get_mut(store)
                        .ok_or_else(|| format!("the guest's context has no store `{store}`"))?;
                    let facts: Map<String, Value> = facts
                        .into_iter()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect();
                    if file.content != facts {
                        file.replace(facts)
                            .map_err(|e| format!("could not write the downstream facts: {e}"))?;
                    }
                }
                PlatformChange::Device { user_agent, record } => {
                    let record: Value = serde_json::from_str(&record)
                        .map_err(|e| format!("a device detection record is not JSON: {e}"))?;
                    self.device_detection
                        .set(user_agent, Some(record))
                        .map_err(|e| format!("could not write the device table: {e}"))?;
                }
                other => {
                    return Err(format!("{other:?} reached the files (a bug in edge-test)"));
                }
            }
        }
        Ok(())
    }
}

/// How viceroy's geolocation file names an address.
fn address_key(ip: IpAddr) -> String {
    ip.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: PathBuf) -> Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn a_change_is_read_back_through_the_path_viceroy_opens() {
        let mut stores = BTreeMap::new();
        stores.insert(
            "flags".to_owned(),
            Map::from_iter([("a".to_owned(), Value::from("1"))]),
        );
        let mut files = PlatformFiles::new(stores, Map::new(), Map::new()).unwrap();
        let (_, path) = files.config_store_paths().next().unwrap();
        assert_eq!(read(path.clone()), serde_json::json!({"a": "1"}));
        files
            .apply(vec![
                PlatformChange::ConfigEntry {
                    store: "flags".into(),
                    key: "b".into(),
                    value: Some("2".into()),
                },
                PlatformChange::ConfigEntry {
                    store: "flags".into(),
                    key: "a".into(),
                    value: None,
                },
            ])
            .unwrap();
        assert_eq!(read(path), serde_json::json!({"b": "2"}));
    }

    #[test]
    fn after_make_private_writes_no_longer_reach_the_shared_file() {
        let mut files = PlatformFiles::new(BTreeMap::new(), Map::new(), Map::new()).unwrap();
        // What a forked worker inherits: the template's open file, shared.
        let shared = files.geolocation.fd.try_clone().unwrap();
        files.make_private().unwrap();
        files
            .apply(vec![PlatformChange::Geo {
                ip: "192.0.2.1".parse().unwrap(),
                record: r#"{"city":"Oslo"}"#.into(),
            }])
            .unwrap();
        assert_eq!(
            read(files.geolocation_path()),
            serde_json::json!({"192.0.2.1": {"city": "Oslo"}})
        );
        let shared_path = PathBuf::from(format!("/proc/self/fd/{}", shared.as_raw_fd()));
        assert_eq!(read(shared_path), serde_json::json!({}));
    }

    #[test]
    fn an_unknown_store_is_named() {
        let mut files = PlatformFiles::new(BTreeMap::new(), Map::new(), Map::new()).unwrap();
        let error = files
            .apply(vec![PlatformChange::ConfigEntry {
                store: "nope".into(),
                key: "k".into(),
                value: None,
            }])
            .unwrap_err();
        assert!(error.contains("`nope`"), "{error}");
    }
}
