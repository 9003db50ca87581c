//! Every way a fastly 0.13 guest drives Fastly's HTTP cache. Each route sends to the backend
//! `origin` and answers with what it got, plus what the SDK says about the cache
//! (`x-guest-ttl`, `x-guest-age`).

use std::time::Duration;

use fastly::http::{Method, StatusCode};
use fastly::{Error, Request, Response};

const ORIGIN: &str = "origin";

#[fastly::main]
fn main(client: Request) -> Result<Response, Error> {
    let path = client.get_path().to_owned();
    let query = client
        .get_query_str()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let segments: Vec<&str> = path.trim_start_matches('/').splitn(3, '/').collect();
    let backend_request = |rest: &str| {
        let mut request = Request::get(format!("https://origin.example.com/{rest}{query}"));
        for name in ["accept-language", "x-variant", "cookie"] {
            if let Some(value) = client.get_header(name) {
                request.set_header(name, value.clone());
            }
        }
        request
    };
    let rest = |from: usize| segments[from..].join("/");
    let response = match segments.as_slice() {
        ["get", ..] => backend_request(&rest(1)).send(ORIGIN)?,
        ["head", ..] => backend_request(&rest(1))
            .with_method(Method::HEAD)
            .send(ORIGIN)?,
        ["post", ..] => backend_request(&rest(1))
            .with_method(Method::POST)
            .with_body("posted")
            .send(ORIGIN)?,
        ["ttl", secs, ..] => {
            let mut request = backend_request(&rest(2));
            request.set_ttl(secs.parse()?);
            request.send(ORIGIN)?
        }
        ["swr", secs, ..] => {
            let mut request = backend_request(&rest(2));
            request.set_stale_while_revalidate(secs.parse()?);
            request.send(ORIGIN)?
        }
        ["pass", ..] => {
            let mut request = backend_request(&rest(1));
            request.set_pass(true);
            request.send(ORIGIN)?
        }
        ["keyed", key, ..] => {
            let mut request = backend_request(&rest(2));
            request.set_cache_key(key.as_bytes().to_vec());
            request.send(ORIGIN)?
        }
        ["surrogate", key, ..] => {
            let mut request = backend_request(&rest(2));
            request.set_surrogate_key(key.parse()?);
            request.send(ORIGIN)?
        }
        ["before", ..] => {
            let mut request = backend_request(&rest(1));
            request.set_before_send(|backend| {
                backend.set_header("x-before", "applied");
                Ok(())
            });
            request.send(ORIGIN)?
        }
        ["after", ..] => {
            let mut request = backend_request(&rest(1));
            request.set_after_send(|candidate| {
                candidate.set_ttl(Duration::from_secs(300));
                candidate.set_surrogate_keys(["after-key"]);
                candidate.set_header("x-after", "applied");
                candidate.set_body_transform(|body, out| {
                    out.append(body.into_string().to_uppercase().into());
                    Ok(())
                });
                Ok(())
            });
            request.send(ORIGIN)?
        }
        ["after-uncacheable", ..] => {
            let mut request = backend_request(&rest(1));
            request.set_after_send(|candidate| {
                candidate.set_uncacheable(false);
                Ok(())
            });
            request.send(ORIGIN)?
        }
        ["after-cacheable", ..] => {
            let mut request = backend_request(&rest(1));
            request.set_after_send(|candidate| {
                candidate.set_cacheable();
                candidate.set_ttl(Duration::from_secs(60));
                Ok(())
            });
            request.send(ORIGIN)?
        }
        // Shaped like crates.io's static service: a long TTL on every S3 fetch, and an
        // after-send hook that tags the object with surrogate keys and drops S3's headers.
        ["crates", ..] => {
            let object = rest(1);
            let mut request = backend_request(&object);
            request.set_ttl(31_536_000);
            request.set_after_send(move |candidate| {
                let krate = object.split('/').nth(1).unwrap_or("unknown").to_owned();
                candidate.set_surrogate_keys(["static", &format!("crate-{krate}")]);
                let amz: Vec<String> = candidate
                    .get_header_names_str()
                    .into_iter()
                    .filter(|n| n.starts_with("x-amz-"))
                    .map(str::to_owned)
                    .collect();
                for name in amz {
                    candidate.remove_header(name);
                }
                Ok(())
            });
            request.send(ORIGIN)?
        }
        // Shaped like Fastly's advanced-caching starter kit: the backend request is
        // normalised before it goes out, and the TTL chosen per content type after.
        ["kit", ..] => {
            let mut request = backend_request(&rest(1));
            request.set_before_send(|backend| {
                backend.remove_header("cookie");
                backend.set_header("x-origin-auth", "kit-secret");
                Ok(())
            });
            request.set_after_send(|candidate| {
                if candidate.get_status().is_server_error() {
                    candidate.set_uncacheable(true);
                    return Ok(());
                }
                let image = candidate
                    .get_header_str("content-type")
                    .is_some_and(|t| t.starts_with("image/"));
                candidate.set_ttl(Duration::from_secs(if image { 3600 } else { 60 }));
                candidate.set_stale_while_revalidate(Duration::from_secs(30));
                candidate.remove_header("set-cookie");
                Ok(())
            });
            request.send(ORIGIN)?
        }
        ["pair", ..] => {
            let first = backend_request(&rest(1)).send_async(ORIGIN)?;
            let second = backend_request(&rest(1)).send_async(ORIGIN)?;
            let (done, others) = fastly::http::request::select(vec![first, second]);
            let mut bodies = vec![done?.into_body_str()];
            for pending in others {
                bodies.push(pending.wait()?.into_body_str());
            }
            return Ok(Response::from_body(bodies.join(",")));
        }
        ["async", ..] => backend_request(&rest(1)).send_async(ORIGIN)?.wait()?,
        // A guest whose stack has grown down to `kib` KiB by the time it sends.
        ["deep", kib, ..] => {
            let request = backend_request(&rest(2));
            deep(kib.parse()?, &mut Some(request))?
        }
        ["purge", key] => {
            fastly::http::purge::purge_surrogate_key(key)?;
            return Ok(Response::from_body("purged"));
        }
        _ => return Ok(Response::from_status(StatusCode::NOT_FOUND).with_body("no such route")),
    };
    let ttl = response.get_ttl().map(|t| t.as_secs().to_string());
    let age = response.get_age().map(|a| a.as_secs().to_string());
    let mut response = response;
    if let Some(ttl) = ttl {
        response.set_header("x-guest-ttl", ttl);
    }
    if let Some(age) = age {
        response.set_header("x-guest-age", age);
    }
    Ok(response)
}

/// Recurses until its frames lie below `kib` KiB of the memory (the shadow stack grows
/// down from 1 MiB), then sends.
fn deep(kib: usize, request: &mut Option<Request>) -> Result<Response, Error> {
    let pad = std::hint::black_box([0u8; 1024]);
    if (&pad as *const u8 as usize) < kib * 1024 {
        let request = request.take().expect("sent once");
        return Ok(request.send(ORIGIN)?);
    }
    let response = deep(kib, request)?;
    std::hint::black_box(&pad);
    Ok(response)
}
