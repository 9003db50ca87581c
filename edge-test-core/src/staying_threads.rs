//! Serving a Unix socket's connections on threads that stay, for the host and the runner
//! server: a thread started per connection was a good part of either's time per test (its
//! stack mapped and unmapped, its start and its exit, and in the host one more thread for
//! every fork's copy-on-write faults to flush).

use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Pool<S> {
    listener: UnixListener,
    /// Threads waiting in `accept`.
    waiting: AtomicUsize,
    serve: S,
}

/// Accepts connections on `listener` and runs `serve` for each, never returning. Whenever
/// the last waiting thread takes a connection, it starts another first, so a connection
/// never waits for another one's work; the threads number the most connections served at
/// once, plus one. A panic in `serve` ends only its thread.
pub(crate) fn serve_forever<S>(listener: UnixListener, serve: S) -> !
where
    S: Fn(UnixStream) + Send + Sync + 'static,
{
    accept(Arc::new(Pool {
        listener,
        waiting: AtomicUsize::new(0),
        serve,
    }))
}

fn accept<S>(pool: Arc<Pool<S>>) -> !
where
    S: Fn(UnixStream) + Send + Sync + 'static,
{
    loop {
        pool.waiting.fetch_add(1, Ordering::SeqCst);
        let accepted = pool.listener.accept();
        if pool.waiting.fetch_sub(1, Ordering::SeqCst) == 1 {
            let pool = pool.clone();
            std::thread::spawn(move || accept(pool));
        }
        if let Ok((stream, _)) = accepted {
            (pool.serve)(stream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A connection is served while another is still being served: a second thread took it.
    #[test]
    fn a_connection_is_served_while_another_one_is() {
        let dir = std::env::temp_dir().join(format!("edge-test-staying-{}", std::process::id()));
        let _ = std::fs::create_dir(&dir);
        let socket = dir.join("s.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).unwrap();
        std::thread::spawn(move || {
            serve_forever(listener, |mut stream: UnixStream| {
                let mut asked = [0; 1];
                if stream.read_exact(&mut asked).is_ok() && asked[0] == b'h' {
                    // Held until the client hangs up.
                    let _ = stream.read(&mut asked);
                } else {
                    let _ = stream.write_all(b"served");
                }
            })
        });
        let mut holding = UnixStream::connect(&socket).unwrap();
        holding.write_all(b"h").unwrap();
        let mut other = UnixStream::connect(&socket).unwrap();
        other.write_all(b"x").unwrap();
        other
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut answer = String::new();
        other.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "served");
        drop(holding);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
