//! A service's `fastly.toml`: validated once, handed to each session as text.

use std::path::Path;

use crate::error::EdgeError;

#[derive(Debug, Clone)]
pub(crate) struct Manifest {
    /// Kept as text: every session parses its own copy, so its KV stores are its own
    /// (viceroy's stores are shared handles, a parsed config must never be reused).
    pub text: String,
    /// The backends the service declares; each one gets a mock server per test.
    pub backends: Vec<String>,
    /// The config stores it declares, sorted: the ones a test may change.
    pub config_stores: Vec<String>,
    /// The KV stores it declares, sorted.
    pub kv_stores: Vec<String>,
    /// The secret stores it declares, sorted.
    pub secret_stores: Vec<String>,
}

impl Manifest {
    pub(crate) fn read(service: &str, path: &Path) -> Result<Self, EdgeError> {
        let base = std::env::current_dir().unwrap_or_default();
        Self::read_for(service, path, &base, &|name| std::env::var(name).ok())
    }

    /// [`read`](Self::read) for another process: relative paths resolved against its working
    /// directory `base`, `env = ..` secrets read from its environment `var` (the runner
    /// server reads a thin runner's manifest so).
    pub(crate) fn read_for(
        service: &str,
        path: &Path,
        base: &Path,
        var: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, EdgeError> {
        let error = |reason: String| EdgeError::Manifest {
            service: service.to_owned(),
            path: path.to_owned(),
            reason,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| error(format!("cannot read it: {e}")))?;
        // Before viceroy reads them: its error for a missing file names neither the file
        // nor where a relative path was looked for.
        if let Ok(table) = text.parse::<toml::Table>()
            && let Some(missing) = missing_files(&table, base).into_iter().next()
        {
            return Err(error(missing));
        }
        let text = self_contained(&text, base, var).map_err(error)?;
        let (mut backends, mut config_stores) = declared(&text).map_err(error)?;
        backends.sort();
        config_stores.sort();
        let kv_stores = declared_stores(&text, &["kv_stores", "object_stores", "object_store"]);
        let secret_stores = declared_stores(&text, &["secret_stores"]);
        Ok(Self {
            text,
            backends,
            config_stores,
            kv_stores,
            secret_stores,
        })
    }
}

/// The backends and the config stores `fastly.toml` declares, once viceroy has validated
/// the whole file.
#[cfg(not(trybuild))]
fn declared(text: &str) -> Result<(Vec<String>, Vec<String>), String> {
    let config: viceroy_lib::config::FastlyConfig = text.parse().map_err(|e| format!("{e}"))?;
    Ok((
        config.backends().keys().cloned().collect(),
        config.dictionaries().keys().cloned().collect(),
    ))
}

/// Without the runtime (`--cfg trybuild`, see `executor`), the names alone.
#[cfg(trybuild)]
fn declared(text: &str) -> Result<(Vec<String>, Vec<String>), String> {
    let table: toml::Table = text.parse().map_err(|e| format!("{e}"))?;
    let names = |section: &str| -> Vec<String> {
        table
            .get("local_server")
            .and_then(|local| local.get(section))
            .and_then(toml::Value::as_table)
            .map(|items| items.keys().cloned().collect())
            .unwrap_or_default()
    };
    let mut stores = names("config_stores");
    stores.extend(names("dictionaries"));
    Ok((names("backends"), stores))
}

/// The stores `fastly.toml` declares in the `[local_server]` tables `sections` (the names
/// viceroy accepts for one kind of store; its own lists of KV and secret stores are private).
fn declared_stores(text: &str, sections: &[&str]) -> Vec<String> {
    let Ok(table) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let mut names: Vec<String> = sections
        .iter()
        .filter_map(|section| table.get("local_server")?.get(section)?.as_table())
        .flat_map(|stores| stores.keys().cloned())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The manifest as one any process can read the same: file paths (`file = ..`, or
/// `path = ..` in older KV stores) made absolute against `base` (the test's working
/// directory, as viceroy would resolve them), and secrets read from the environment
/// (`env = ..`) given as data. The shared host reads it, whatever its own directory and
/// environment. Unchanged text when there is nothing to resolve.
fn self_contained(
    text: &str,
    base: &Path,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    fn walk(
        value: &mut toml::Value,
        base: &Path,
        var: &dyn Fn(&str) -> Option<String>,
        changed: &mut bool,
    ) {
        match value {
            toml::Value::Table(table) => {
                for (key, value) in table.iter_mut() {
                    match value {
                        toml::Value::String(file)
                            if (key == "file" || key == "path")
                                && Path::new(file.as_str()).is_relative() =>
                        {
                            *file = base.join(file.as_str()).display().to_string();
                            *changed = true;
                        }
                        _ => walk(value, base, var, changed),
                    }
                }
                if let Some(toml::Value::String(name)) = table.get("env")
                    && let Some(secret) = var(name)
                {
                    table.remove("env");
                    table.insert("data".to_owned(), toml::Value::String(secret));
                    *changed = true;
                }
            }
            toml::Value::Array(items) => {
                for item in items {
                    walk(item, base, var, changed);
                }
            }
            _ => {}
        }
    }
    let Ok(mut table) = text.parse::<toml::Table>() else {
        // viceroy's parse names what is wrong with it.
        return Ok(text.to_owned());
    };
    let mut changed = false;
    if let Some(local) = table.get_mut("local_server") {
        walk(local, base, var, &mut changed);
    }
    Ok(if changed {
        table.to_string()
    } else {
        text.to_owned()
    })
}

/// Every file a `[local_server]` table names (`file = ..`, or `path = ..` in older KV
/// stores) that does not exist, described with where it was looked for. viceroy resolves a
/// relative path against the process's working directory, which under `cargo test` is the
/// test crate's directory.
fn missing_files(table: &toml::Table, base: &Path) -> Vec<String> {
    fn walk(value: &toml::Value, at: &str, base: &Path, missing: &mut Vec<String>) {
        match value {
            toml::Value::Table(table) => {
                for (key, value) in table {
                    let here = format!("{at}.{key}");
                    match value {
                        toml::Value::String(file) if key == "file" || key == "path" => {
                            let resolved = base.join(file);
                            if !resolved.exists() {
                                missing.push(format!(
                                    "{at} names the file {file:?}, which does not exist: looked \
                                     for {} (relative paths resolve against the test's working \
                                     directory, {}). Fix the path, or make it absolute.",
                                    resolved.display(),
                                    base.display()
                                ));
                            }
                        }
                        _ => walk(value, &here, base, missing),
                    }
                }
            }
            toml::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, &format!("{at}[{i}]"), base, missing);
                }
            }
            _ => {}
        }
    }
    let mut missing = Vec::new();
    if let Some(local) = table.get("local_server") {
        walk(local, "[local_server", base, &mut missing);
    }
    // "[local_server.kv_stores.data[0]" reads better closed.
    missing
        .into_iter()
        .map(|m| m.replacen(" names the file", "] names the file", 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_become_absolute_and_env_secrets_data() {
        let text = r#"
            [local_server.config_stores.settings]
            file = "data/settings.json"
            format = "json"
            [local_server.secret_stores]
            keys = [{ key = "home", env = "HOME" }, { key = "abs", file = "/etc/hostname" }]
        "#;
        // The environment of the process the manifest is read for, not this one's.
        let var = |name: &str| (name == "HOME").then(|| "/home/caller".to_owned());
        let resolved: toml::Table = self_contained(text, Path::new("/work/crate"), &var)
            .unwrap()
            .parse()
            .unwrap();
        let local = &resolved["local_server"];
        assert_eq!(
            local["config_stores"]["settings"]["file"].as_str(),
            Some("/work/crate/data/settings.json")
        );
        let keys = local["secret_stores"]["keys"].as_array().unwrap();
        assert_eq!(keys[0]["data"].as_str(), Some("/home/caller"));
        assert!(keys[0].get("env").is_none());
        assert_eq!(keys[1]["file"].as_str(), Some("/etc/hostname"));
        let plain = "[local_server.backends.api]\nurl = \"https://x\"\n";
        assert_eq!(self_contained(plain, Path::new("/x"), &var).unwrap(), plain);
    }

    #[test]
    fn a_missing_file_is_named_with_where_it_was_looked_for() {
        let table: toml::Table = r#"
            [local_server.config_stores.settings]
            file = "no-such-settings.json"
            format = "json"
            [[local_server.kv_stores.data]]
            key = "k"
            path = "Cargo.toml"
        "#
        .parse()
        .unwrap();
        let base = Path::new(env!("CARGO_MANIFEST_DIR"));
        let missing = missing_files(&table, base);
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(
            missing[0].starts_with(
                "[local_server.config_stores.settings] names the file \"no-such-settings.json\", \
                 which does not exist: looked for "
            ),
            "{}",
            missing[0]
        );
        assert!(
            missing[0].contains(&format!("working directory, {})", base.display())),
            "{}",
            missing[0]
        );
    }
}
