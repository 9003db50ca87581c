//! A real origin for the cassette tests: a small HTTP/1.1 server on loopback, written on
//! `std::net` alone (nothing of edge-test's mocks), stopped when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// The token `/whoami` accepts.
pub const SECRET: &str = "Bearer s3cret-token-of-the-guest";

pub struct Origin {
    addr: SocketAddr,
    stopped: Arc<AtomicBool>,
    /// Requests it answered (or dropped), all routes together.
    pub requests: Arc<AtomicUsize>,
}

impl Origin {
    /// Serves, on a thread per connection:
    /// - `GET /todos/<id>`: `{"id":<id>,"title":"from the real origin"}` (JSON)
    /// - `GET /counter`: `1`, `2`, ... (one more each time)
    /// - `POST /echo`: the body back, as JSON
    /// - `GET /whoami`: 200 `ok` with a session cookie for [`SECRET`], else 401
    /// - `GET /binary`: four bytes that are not UTF-8
    /// - `GET /down`: 503; `GET /drop`: closes without answering; `GET /slow`: answers after 3 s
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stopped = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::new(AtomicUsize::new(0));
        {
            let (stopped, requests) = (stopped.clone(), requests.clone());
            std::thread::spawn(move || {
                while !stopped.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (requests, counter) = (requests.clone(), counter.clone());
                            std::thread::spawn(move || serve(stream, &requests, &counter));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        Self {
            addr,
            stopped,
            requests,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        // The listener closes with its thread, within one poll.
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn serve(stream: TcpStream, requests: &AtomicUsize, counter: &AtomicUsize) {
    let _ = stream.set_nonblocking(false);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    );
    let mut length = 0;
    let mut authorization = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or((&header, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "authorization" => authorization = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    requests.fetch_add(1, Ordering::SeqCst);
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, extra, payload): (u16, &str, &str, Vec<u8>) =
        match (method.as_str(), path) {
            ("GET", p) if p.starts_with("/todos/") => {
                let id = &p["/todos/".len()..];
                let json = format!(r#"{{"id":{id},"title":"from the real origin"}}"#);
                (200, "application/json", "", json.into_bytes())
            }
            ("GET", "/counter") => {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                (200, "text/plain", "", n.to_string().into_bytes())
            }
            ("POST", "/echo") => (200, "application/json", "", body),
            ("GET", "/whoami") if authorization.as_deref() == Some(SECRET) => (
                200,
                "text/plain",
                "set-cookie: session=origin-session-secret\r\n",
                b"ok".to_vec(),
            ),
            ("GET", "/whoami") => (401, "text/plain", "", b"who are you?".to_vec()),
            ("GET", "/binary") => (
                200,
                "application/octet-stream",
                "",
                vec![0xff, 0x00, 0xfe, 0x01],
            ),
            ("GET", "/down") => (503, "text/plain", "", b"down for maintenance".to_vec()),
            ("GET", "/drop") => return,
            ("GET", "/slow") => {
                std::thread::sleep(Duration::from_secs(3));
                (200, "text/plain", "", b"late".to_vec())
            }
            _ => (404, "text/plain", "", b"no such route".to_vec()),
        };
    let mut stream = reader.into_inner();
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         cache-control: private\r\n{extra}connection: close\r\n\r\n",
        payload.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&payload);
}
