//! An async test's own futures keep running while its guest works: a request is awaited,
//! not blocked on, whichever executor runs the guest.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use edge_test::mock::{Mock, Reply, matchers::any};
use edge_test::{Edge, edge_test};

fn slow_backend(edge: &Edge, delay: Duration) {
    Mock::given(any())
        .respond_with(Reply::text(200, "late").delay(delay))
        .mount(&edge.backend("api"));
}

#[edge_test(service = "misbehave")]
async fn a_test_can_time_out_its_own_request(edge: Edge) {
    slow_backend(&edge, Duration::from_secs(2));
    let outcome =
        tokio::time::timeout(Duration::from_millis(100), edge.get("/backend/slow").send()).await;
    assert!(
        outcome.is_err(),
        "the guest waits 2 s for its backend; the test's 100 ms timeout must fire first"
    );
    // The abandoned request still runs to its end; the next one is answered after it, and
    // gets its own response, not the abandoned one's.
    let next = edge.get("/ok").send().await;
    assert_eq!(next.text(), "ok");
}

#[edge_test(service = "misbehave")]
async fn the_test_body_runs_while_the_guest_works(edge: Edge) {
    slow_backend(&edge, Duration::from_millis(300));
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = {
        let ticks = ticks.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ticks.fetch_add(1, Ordering::SeqCst);
            }
        }
    };
    let response = tokio::select! {
        response = edge.get("/backend/slow").send() => response,
        () = ticker => unreachable!("the ticker never ends"),
    };
    assert_eq!(response.text(), "late");
    assert!(
        ticks.load(Ordering::SeqCst) > 0,
        "a future of the test made no progress during a 300 ms request"
    );
}

/// Polls a future to completion on this thread, with no tokio runtime anywhere: what a
/// test on another executor does.
fn block_on_without_tokio<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut context = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}

#[test]
fn send_can_be_awaited_outside_tokio() {
    let edge = Edge::start("misbehave", "other executor").expect("misbehave starts");
    assert!(tokio::runtime::Handle::try_current().is_err());
    let response = block_on_without_tokio(edge.get("/ok").send());
    assert_eq!(response.text(), "ok");
}
