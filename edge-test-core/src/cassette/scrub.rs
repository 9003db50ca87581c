//! What never reaches a cassette: credentials in headers and query parameters, replaced by
//! [`SCRUBBED`] before anything is written, and in every live request before it is matched
//! (so a recorded `authorization: [scrubbed]` still matches the real header at replay).

use super::{CassetteRequest, CassetteResponse};

pub(super) const SCRUBBED: &str = "[scrubbed by edge-test]";

/// Headers that carry credentials by name.
const CREDENTIAL_HEADERS: [&str; 4] = [
    "authorization",
    "cookie",
    "set-cookie",
    "proxy-authorization",
];

/// Parts of a header or query parameter name that look like a key, a token or a secret.
const CREDENTIAL_WORDS: [&str; 9] = [
    "api-key",
    "api_key",
    "apikey",
    "token",
    "secret",
    "password",
    "passwd",
    "signature",
    "credential",
];

fn is_credential(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    CREDENTIAL_HEADERS.contains(&name.as_str()) || CREDENTIAL_WORDS.iter().any(|w| name.contains(w))
}

fn headers(headers: &mut [(String, String)]) {
    for (name, value) in headers {
        if is_credential(name) {
            *value = SCRUBBED.to_owned();
        }
    }
}

pub(super) fn request(request: &mut CassetteRequest) {
    headers(&mut request.headers);
    if let Some(query) = &request.query {
        let scrubbed: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_credential(name) => format!("{name}={SCRUBBED}"),
                _ => pair.to_owned(),
            })
            .collect();
        request.query = Some(scrubbed.join("&"));
    }
}

pub(super) fn response(response: &mut CassetteResponse) {
    headers(&mut response.headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_headers_and_query_parameters_are_replaced() {
        let mut r = CassetteRequest {
            method: "GET".into(),
            path: "/".into(),
            query: Some("page=2&api_key=abc&access_token=t".into()),
            headers: vec![
                ("authorization".into(), "Bearer s3cret".into()),
                ("x-api-key".into(), "k".into()),
                ("accept".into(), "*/*".into()),
            ],
            body: Vec::new(),
        };
        request(&mut r);
        assert_eq!(
            r.query.as_deref(),
            Some("page=2&api_key=[scrubbed by edge-test]&access_token=[scrubbed by edge-test]")
        );
        assert_eq!(r.headers[0].1, SCRUBBED);
        assert_eq!(r.headers[1].1, SCRUBBED);
        assert_eq!(r.headers[2].1, "*/*");
    }
}
