//! What a test changes in its service's `fastly.toml` itself: secrets, and stores the file
//! does not declare. Unlike entries of declared config and KV stores (changed at run time),
//! these are compiled into the guest's context, so the edge starts its guest again from the
//! edited manifest before its first request. The host compiles each distinct edited manifest
//! once per run, like any other configuration.

use std::collections::{BTreeMap, BTreeSet};

/// The kinds of store a test can declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum StoreKind {
    Config,
    Kv,
    Secret,
}

impl StoreKind {
    /// The `[local_server]` table viceroy reads stores of this kind from.
    fn table(self) -> &'static str {
        match self {
            StoreKind::Config => "config_stores",
            StoreKind::Kv => "kv_stores",
            StoreKind::Secret => "secret_stores",
        }
    }

    /// Other names viceroy accepts for that table.
    fn aliases(self) -> &'static [&'static str] {
        match self {
            StoreKind::Config => &["dictionaries"],
            StoreKind::Kv => &["object_stores", "object_store"],
            StoreKind::Secret => &[],
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            StoreKind::Config => "config store",
            StoreKind::Kv => "KV store",
            StoreKind::Secret => "secret store",
        }
    }
}

/// The edits a test made, in the order that does not matter: the result is one manifest.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ManifestEdits {
    /// Stores to add, empty, where the manifest has none of that name.
    pub(crate) declared: BTreeSet<(StoreKind, String)>,
    /// Secrets to set (`Some`) or remove (`None`), by store and name.
    pub(crate) secrets: BTreeMap<String, BTreeMap<String, Option<String>>>,
}

impl ManifestEdits {
    /// The manifest `text` with these edits made. `Err` says what cannot be edited.
    pub(crate) fn apply(&self, text: Option<&str>) -> Result<String, String> {
        let mut manifest: toml::Table = match text {
            Some(text) => text
                .parse()
                .map_err(|e| format!("fastly.toml does not parse: {e}"))?,
            None => toml::Table::new(),
        };
        let local = table_at(&mut manifest, "local_server")?;
        for (kind, name) in &self.declared {
            if declares(local, *kind, name) {
                continue;
            }
            let empty = match kind {
                StoreKind::Config => toml::Value::Table(toml::Table::from_iter([
                    ("format".to_owned(), toml::Value::from("inline-toml")),
                    (
                        "contents".to_owned(),
                        toml::Value::Table(toml::Table::new()),
                    ),
                ])),
                StoreKind::Kv | StoreKind::Secret => toml::Value::Array(Vec::new()),
            };
            store_table(local, *kind)?.insert(name.clone(), empty);
        }
        for (store, secrets) in &self.secrets {
            let stores = store_table(local, StoreKind::Secret)?;
            let mut entries = secret_entries(stores.get(store), store)?;
            for (key, value) in secrets {
                entries.retain(|entry| entry.get("key").and_then(|k| k.as_str()) != Some(key));
                if let Some(value) = value {
                    entries.push(toml::Value::Table(toml::Table::from_iter([
                        ("key".to_owned(), toml::Value::from(key.as_str())),
                        ("data".to_owned(), toml::Value::from(value.as_str())),
                    ])));
                }
            }
            stores.insert(store.clone(), toml::Value::Array(entries));
        }
        Ok(manifest.to_string())
    }
}

/// Whether `local` (a `[local_server]` table) declares a store of this kind and name.
pub(crate) fn declares(local: &toml::Table, kind: StoreKind, name: &str) -> bool {
    std::iter::once(kind.table())
        .chain(kind.aliases().iter().copied())
        .filter_map(|table| local.get(table)?.as_table())
        .any(|stores| stores.contains_key(name))
}

/// The table stores of `kind` are declared in: the one the manifest uses (viceroy takes
/// only one of a kind's names), else the kind's own, created.
fn store_table(local: &mut toml::Table, kind: StoreKind) -> Result<&mut toml::Table, String> {
    let used = kind
        .aliases()
        .iter()
        .copied()
        .find(|alias| local.contains_key(*alias))
        .unwrap_or(kind.table());
    table_at(local, used)
}

/// The table at `key` in `table`, created when missing.
fn table_at<'a>(table: &'a mut toml::Table, key: &str) -> Result<&'a mut toml::Table, String> {
    table
        .entry(key.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or_else(|| format!("`{key}` in fastly.toml is not a table"))
}

/// A secret store's entries as an inline array of `{key, data | file | env}` tables: as
/// declared, or read from the JSON file it names.
fn secret_entries(store: Option<&toml::Value>, name: &str) -> Result<Vec<toml::Value>, String> {
    match store {
        None => Ok(Vec::new()),
        Some(toml::Value::Array(entries)) => Ok(entries.clone()),
        Some(toml::Value::Table(table)) => {
            let file = table.get("file").and_then(|f| f.as_str()).ok_or_else(|| {
                format!("secret store `{name}` in fastly.toml is neither an array nor a file")
            })?;
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("secret store `{name}`: cannot read {file:?}: {e}"))?;
            let secrets: BTreeMap<String, String> = serde_json::from_str(&text).map_err(|e| {
                format!("secret store `{name}`: {file:?} is not a JSON object of strings: {e}")
            })?;
            Ok(secrets
                .into_iter()
                .map(|(key, data)| {
                    toml::Value::Table(toml::Table::from_iter([
                        ("key".to_owned(), toml::Value::from(key)),
                        ("data".to_owned(), toml::Value::from(data)),
                    ]))
                })
                .collect())
        }
        Some(_) => Err(format!(
            "secret store `{name}` in fastly.toml is neither an array nor a file"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
        [local_server.secret_stores]
        credentials = [{ key = "token", data = "old" }, { key = "other", data = "kept" }]
        [local_server.config_stores.settings]
        format = "inline-toml"
        contents = { a = "1" }
    "#;

    fn local(text: &str) -> toml::Table {
        let manifest: toml::Table = text.parse().unwrap();
        manifest["local_server"].as_table().unwrap().clone()
    }

    #[test]
    fn secrets_are_set_replaced_and_removed() {
        let mut edits = ManifestEdits::default();
        edits.secrets.insert(
            "credentials".into(),
            BTreeMap::from([
                ("token".into(), Some("new".into())),
                ("other".into(), None),
                ("added".into(), Some("x".into())),
            ]),
        );
        let local = local(&edits.apply(Some(MANIFEST)).unwrap());
        let entries = local["secret_stores"]["credentials"].as_array().unwrap();
        let pairs: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| (e["key"].as_str().unwrap(), e["data"].as_str().unwrap()))
            .collect();
        assert_eq!(pairs, [("added", "x"), ("token", "new")]);
        assert_eq!(
            local["config_stores"]["settings"]["contents"]["a"].as_str(),
            Some("1")
        );
    }

    #[test]
    fn declared_stores_are_added_empty_unless_present() {
        let mut edits = ManifestEdits::default();
        edits.declared.insert((StoreKind::Kv, "sessions".into()));
        edits.declared.insert((StoreKind::Config, "flags".into()));
        edits
            .declared
            .insert((StoreKind::Config, "settings".into()));
        edits.declared.insert((StoreKind::Secret, "keys".into()));
        let text = edits.apply(Some(MANIFEST)).unwrap();
        let local = local(&text);
        assert_eq!(
            local["kv_stores"]["sessions"].as_array().map(Vec::len),
            Some(0)
        );
        assert_eq!(
            local["secret_stores"]["keys"].as_array().map(Vec::len),
            Some(0)
        );
        assert_eq!(
            local["config_stores"]["flags"]["format"].as_str(),
            Some("inline-toml")
        );
        assert_eq!(
            local["config_stores"]["settings"]["contents"]["a"].as_str(),
            Some("1"),
            "a declared store is left as it is"
        );
    }

    #[test]
    fn a_store_goes_where_the_manifest_declares_its_kind() {
        let mut edits = ManifestEdits::default();
        edits.declared.insert((StoreKind::Config, "flags".into()));
        let text = "[local_server.dictionaries.old]\nformat = \"inline-toml\"\ncontents = {}\n";
        let local = local(&edits.apply(Some(text)).unwrap());
        assert!(local["dictionaries"].get("flags").is_some(), "{local:?}");
        assert!(!local.contains_key("config_stores"));
    }

    #[test]
    fn no_manifest_gets_one() {
        let mut edits = ManifestEdits::default();
        edits.declared.insert((StoreKind::Kv, "data".into()));
        let local = local(&edits.apply(None).unwrap());
        assert!(declares(&local, StoreKind::Kv, "data"));
    }
}
