//! Another service as a backend: service A's backend answered by registered service B,
//! running beside A in the same test, in its own pristine instance (compiled once, like A),
//! with its own mocks, stores and logs ([`Edge::other_service`]).
//!
//! A request A's guest sends to the routed backend is recorded as A's backend call like any
//! other, then sent to B as a downstream request (method, path, query, headers and body as A
//! sent them) from a blocking thread of A's mock server: B's invocation runs in B's session
//! under B's own time limit. B's answer is A's backend response; B's failure (a trap, a
//! panic after its response, a mock it lacked) fails A's request, quoting B's. A route that
//! would close a cycle is refused where it is made: A's invocation holds A's turn while B
//! runs, so B could never reach A.

use std::sync::Arc;

use super::Edge;
use crate::backend_request::BackendRequest;
use crate::mock::Reply;
use crate::mock::server::Route;

impl Edge {
    /// Registered service `name`, running beside this one in this test: its own pristine
    /// instance, mocks, stores and logs, started the first time the test asks (and the same
    /// edge every later time). Route one of this service's backends to it with
    /// [`route`](Self::route). Panics, like `#[edge_test]`, when the service cannot start.
    pub fn other_service(&self, name: &str) -> Edge {
        self.local_only(|| format!("starts service `{name}` beside it"));
        let mut services = crate::sync::lock(&self.inner.services);
        if let Some(edge) = services.get(name) {
            return edge.clone();
        }
        let edge = Edge::start(name, &format!("{} (service `{name}`)", self.inner.test))
            .unwrap_or_else(|e| panic!("{e}"));
        services.insert(name.to_owned(), edge.clone());
        edge
    }

    /// Answers this service's backend `backend` with `service` (from
    /// [`Edge::other_service`]): requests no mock matches go to it as downstream requests. Mocks
    /// mounted on the backend still answer first. Panics for a backend the service does not
    /// declare, or a route that closes a cycle (naming it).
    ///
    /// ```no_run
    /// # fn doc(edge: edge_test_core::Edge) {
    /// let todo = edge.other_service("todo");
    /// edge.route("api", &todo);                      // auth's `api` backend is the todo service
    /// let resp = edge.get("/todos/1").header("authorization", "Bearer t").send_blocking();
    /// # let _ = resp;
    /// # }
    /// ```
    pub fn route(&self, backend: &str, service: &Edge) {
        let _ = self.backend(backend);
        if let Some(cycle) = service.path_to(self, &mut Vec::new()) {
            let names: Vec<&str> = std::iter::once(self.service())
                .chain(cycle.iter().map(|e| e.service()))
                .collect();
            panic!(
                "edge-test: routing backend `{backend}` of service `{}` to service `{}` would \
                 close a cycle: {}. A service cannot answer a request its own request is \
                 waiting on",
                self.service(),
                service.service(),
                names.join(" -> ")
            );
        }
        crate::sync::lock(&self.inner.routes).push(service.clone());
        self.inner.mocks.set_route(
            backend,
            Arc::new(ServiceRoute {
                edge: service.clone(),
            }),
        );
    }

    /// The edges from this one to `target` along routes, this one first, if `target` can be
    /// reached (itself included).
    fn path_to(&self, target: &Edge, seen: &mut Vec<*const ()>) -> Option<Vec<Edge>> {
        if Arc::ptr_eq(&self.inner, &target.inner) {
            return Some(vec![self.clone()]);
        }
        let me = Arc::as_ptr(&self.inner).cast::<()>();
        if seen.contains(&me) {
            return None;
        }
        seen.push(me);
        let routes = crate::sync::lock(&self.inner.routes).clone();
        routes.iter().find_map(|next| {
            let mut path = next.path_to(target, seen)?;
            path.insert(0, self.clone());
            Some(path)
        })
    }

    /// Every response this edge gave to requests routed to it from another service's
    /// backend, in order: with their logs and backend calls.
    pub fn served(&self) -> Vec<crate::Response> {
        crate::sync::lock(&self.inner.served).clone()
    }

    /// The services this test started beside its own ([`other_service`](Self::other_service)).
    pub(super) fn services(&self) -> Vec<Edge> {
        crate::sync::lock(&self.inner.services)
            .values()
            .cloned()
            .collect()
    }
}

/// A backend answered by another service's edge.
struct ServiceRoute {
    edge: Edge,
}

impl Route for ServiceRoute {
    fn answer(&self, request: &BackendRequest) -> Result<Reply, String> {
        let path = match &request.query {
            Some(query) => format!("{}?{query}", request.path),
            None => request.path.clone(),
        };
        let mut builder = self.edge.request(request.method.clone(), &path);
        for (name, value) in &request.headers {
            builder = builder.header(name.clone(), value.clone());
        }
        let response = builder
            .body(request.body.clone())
            .try_send_blocking()
            .map_err(|failure| {
                format!(
                    "service `{}`, which answers it, failed:\n{failure}",
                    self.edge.service()
                )
            })?;
        let reply = response
            .headers()
            .iter()
            // Counted again for the body as it is passed on.
            .filter(|(name, _)| *name != http::header::CONTENT_LENGTH)
            .fold(
                Reply::new(response.status().as_u16()),
                |reply, (name, value)| {
                    reply.header(name.as_str(), String::from_utf8_lossy(value.as_bytes()))
                },
            )
            .body(response.bytes().to_vec());
        crate::sync::lock(&self.edge.inner.served).push(response);
        Ok(reply)
    }
}
