//! A guest with unit tests of its own, as Fastly's guidance has them: `#[test]` functions
//! inside the guest crate that call the fastly APIs directly. Grouped by what the runner
//! must make of them: `passing` (each passes only if it runs in a pristine instance of its
//! own), `failing` (each fails in its own way, and alone), `backends` (a local server the
//! test starts), `slow` (a loop, run with a short time limit).

use fastly::{Error, Request, Response};

#[fastly::main]
fn main(_req: Request) -> Result<Response, Error> {
    Ok(Response::from_body(greeting("world")))
}

/// What the service says; tested below.
pub fn greeting(name: &str) -> String {
    format!("hello, {name}")
}

#[cfg(test)]
mod passing {
    use std::io::Write;
    use std::time::Duration;

    use fastly::cache::core::{self, CacheKey};
    use fastly::{ConfigStore, KVStore};

    #[test]
    fn greets() {
        assert_eq!(super::greeting("edge"), "hello, edge");
    }

    #[test]
    fn reads_the_config_store_fastly_toml_declares() {
        let settings = ConfigStore::open("settings");
        assert_eq!(
            settings.get("greeting").as_deref(),
            Some("hello from fastly.toml")
        );
    }

    /// Each `kv_` test finds the store as declared, then writes to it: whichever of the two
    /// runs second would fail if they shared an instance.
    fn kv_starts_as_declared_then_write(mark: &str) {
        let notes = KVStore::open("notes").unwrap().unwrap();
        let welcome = notes.lookup("welcome").unwrap().take_body().into_string();
        assert_eq!(welcome, "first note");
        assert!(
            notes.lookup("written").is_err(),
            "another test's KV write is visible"
        );
        notes.insert("written", mark.to_owned()).unwrap();
        assert_eq!(
            notes.lookup("written").unwrap().take_body().into_string(),
            mark
        );
    }

    #[test]
    fn kv_first() {
        kv_starts_as_declared_then_write("first");
    }

    #[test]
    fn kv_second() {
        kv_starts_as_declared_then_write("second");
    }

    /// The same for the core cache.
    fn cache_starts_empty_then_insert(mark: &str) {
        let key = CacheKey::from_static(b"shared-key");
        assert!(
            core::lookup(key.clone()).execute().unwrap().is_none(),
            "another test's cache entry is visible"
        );
        let mut body = core::insert(key.clone(), Duration::from_secs(60))
            .execute()
            .unwrap();
        body.write_all(mark.as_bytes()).unwrap();
        body.finish().unwrap();
        let found = core::lookup(key).execute().unwrap().unwrap();
        assert_eq!(found.to_stream().unwrap().into_string(), mark);
    }

    #[test]
    fn cache_first() {
        cache_starts_empty_then_insert("first");
    }

    #[test]
    fn cache_second() {
        cache_starts_empty_then_insert("second");
    }

    #[test]
    fn prints_and_logs() {
        println!("printed by prints_and_logs");
        let mut audit = fastly::log::Endpoint::from_name("audit");
        write!(audit, "logged by prints_and_logs").unwrap();
    }

    #[test]
    #[ignore = "runs only with --ignored"]
    fn ignored_but_passes() {
        println!("the ignored test ran");
    }
}

#[cfg(test)]
mod failing {
    use std::io::Write;

    #[test]
    fn panics() {
        println!("context printed before the panic");
        let mut audit = fastly::log::Endpoint::from_name("audit");
        write!(audit, "logged before the panic").unwrap();
        panic!("boom in a unit test");
    }

    #[test]
    fn traps() {
        core::arch::wasm32::unreachable();
    }

    #[test]
    fn returns_an_error() -> Result<(), String> {
        Err("went wrong".to_owned())
    }

    #[test]
    fn exits() {
        std::process::exit(3);
    }

    #[test]
    fn exhausts_memory() {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![1; 16 << 20]);
        }
    }

    #[test]
    fn calls_a_dynamic_backend() {
        let backend = fastly::Backend::builder("avatars", "avatars.example.net:443")
            .finish()
            .unwrap();
        let resp = fastly::Request::get("https://avatars.example.net/u/ada.png").send(backend);
        println!("the guest got {:?}", resp.map(|r| r.get_status()));
    }

    #[test]
    fn calls_a_backend_off_loopback() {
        let resp = fastly::Request::get("https://api.example.com/v1").send("remote");
        println!("the guest got {:?}", resp.map(|r| r.get_status()));
    }
}

#[cfg(test)]
mod backends {
    #[test]
    fn reaches_the_local_server_fastly_toml_names() {
        let mut resp = fastly::Request::get("http://local.test/todos/7")
            .send("local")
            .unwrap();
        assert_eq!(resp.get_status(), 200);
        let todo: serde_json::Value = resp.take_body_json().unwrap();
        assert_eq!(todo["title"], "from the real origin");
    }
}

#[cfg(test)]
mod slow {
    #[test]
    fn floods_stdout() {
        let line = "x".repeat(64 << 10);
        loop {
            println!("{line}");
        }
    }

    #[test]
    fn loops_forever() {
        #[allow(clippy::empty_loop)]
        loop {
            std::hint::spin_loop();
        }
    }
}
