//! A real origin process for the process-backend tests (not a mock of edge-test's): a
//! small HTTP/1.1 server on `127.0.0.1:$PORT`.
//!
//! - `GET /hello`: `hello from <pid>`; `GET /crash`: exits with status 7 at once.
//! - `EXIT_EARLY=<code>`: prints `bad config` and exits with that code before listening.
//! - `START_DELAY_MS=<ms>`: waits that long before listening.
//! - Prints `listening on <port>` once it listens.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

fn main() {
    let var = |name: &str| std::env::var(name).ok();
    if let Some(code) = var("EXIT_EARLY") {
        eprintln!("bad config: EXIT_EARLY={code}");
        std::process::exit(code.parse().unwrap_or(1));
    }
    if let Some(ms) = var("START_DELAY_MS").and_then(|ms| ms.parse().ok()) {
        println!("starting slowly ({ms} ms)");
        std::thread::sleep(Duration::from_millis(ms));
    }
    let port = var("PORT").expect("PORT is set");
    let listener = match TcpListener::bind(("127.0.0.1", port.parse::<u16>().expect("a port"))) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on port {port}: {e}");
            std::process::exit(2);
        }
    };
    println!("listening on {port}");
    for stream in listener.incoming().flatten() {
        let mut reader = BufReader::new(stream.try_clone().expect("a socket clones"));
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                break;
            }
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        println!("served {path}");
        if path == "/crash" {
            eprintln!("crashing on purpose");
            std::process::exit(7);
        }
        let body = format!("hello from {}", std::process::id());
        let mut stream = stream;
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncache-control: private\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        );
    }
}
