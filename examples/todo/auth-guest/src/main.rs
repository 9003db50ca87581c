//! The auth gateway: a request with a known bearer token goes on to the todo service (backend
//! `todo`) with the user's name in `x-user`; any other is answered 401 here, and the todo
//! service never sees it.

use fastly::config_store::ConfigStore;
use fastly::http::StatusCode;
use fastly::{Error, Request, Response};

#[fastly::main]
fn main(mut req: Request) -> Result<Response, Error> {
    let token = req
        .get_header_str("authorization")
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::to_owned);
    let user = token.and_then(|token| ConfigStore::open("tokens").get(&token));
    let Some(user) = user else {
        return Ok(Response::from_status(StatusCode::UNAUTHORIZED)
            .with_header("www-authenticate", "Bearer")
            .with_body("sign in first"));
    };
    req.remove_header("authorization");
    req.set_header("x-user", &user);
    // Never cached here: each user's request goes through.
    req.set_pass(true);
    Ok(req.send("todo")?)
}
