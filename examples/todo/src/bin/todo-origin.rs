//! A stand-in for the todo service's origin (`https://api.todo.example`): a small HTTP/1.1
//! server with todos in memory, for recording the example's cassettes (see the README,
//! "Cassettes"). It checks the bearer token the service sends, as the real API would.
//!
//!     cargo run -p todo-service --bin todo-origin -- 127.0.0.1:8787

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// The token `guest/fastly.toml` gives the service (`credentials.origin_token`).
const TOKEN: &str = "Bearer s3cr3t-token";

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8787".to_owned());
    let listener =
        TcpListener::bind(&addr).unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"));
    println!("todo origin listening on http://{addr}");
    let todos = Arc::new(Mutex::new(vec![
        r#"{"id":1,"title":"write edge tests","done":false}"#.to_owned(),
        r#"{"id":2,"title":"record a cassette","done":true}"#.to_owned(),
    ]));
    for stream in listener.incoming().flatten() {
        let todos = todos.clone();
        std::thread::spawn(move || serve(stream, &todos));
    }
}

fn serve(stream: TcpStream, todos: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().expect("a socket clones"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (mut length, mut authorized) = (0, false);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or((&header, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "authorization" => authorized = value.trim() == TOKEN,
            _ => {}
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let (status, payload) = if !authorized {
        (401, r#"{"error":"bad token"}"#.to_owned())
    } else {
        answer(method, path, &body, todos)
    };
    let mut stream = reader.into_inner();
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         cache-control: private\r\nconnection: close\r\n\r\n{payload}",
        payload.len()
    );
}

fn answer(method: &str, path: &str, body: &[u8], todos: &Mutex<Vec<String>>) -> (u16, String) {
    let mut todos = todos.lock().expect("no thread panics holding it");
    match (
        method,
        path.trim_start_matches('/')
            .split('/')
            .collect::<Vec<_>>()
            .as_slice(),
    ) {
        ("GET", ["todos"]) => (200, format!("[{}]", todos.join(","))),
        ("GET", ["todos", id]) => match id
            .parse::<usize>()
            .ok()
            .and_then(|i| todos.get(i.wrapping_sub(1)))
        {
            Some(todo) => (200, todo.clone()),
            None => (404, r#"{"error":"no such todo"}"#.to_owned()),
        },
        ("POST", ["todos"]) => {
            let title = String::from_utf8_lossy(body);
            // The service forwards `{"title": .., "done": false}`; keep its title as sent.
            let title = title
                .split("\"title\":")
                .nth(1)
                .and_then(|rest| rest.split('"').nth(1))
                .unwrap_or("untitled")
                .to_owned();
            let todo = format!(
                r#"{{"id":{},"title":"{title}","done":false}}"#,
                todos.len() + 1
            );
            todos.push(todo.clone());
            (201, todo)
        }
        _ => (404, r#"{"error":"no such route"}"#.to_owned()),
    }
}
