//! Carries a worker's backend traffic to the mocks of the test that owns it.
//!
//! A template is compiled once, so its backends point at fixed addresses: one loopback
//! proxy per backend, in the host. Every worker forked from the template connects there;
//! the proxy tells workers apart by the process on the other end of the connection (found
//! through /proc), and forwards the bytes to that worker's test's mock for the backend.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::EdgeError;

/// Worker pid -> that test's mock address for each backend.
#[derive(Clone, Default)]
pub(super) struct Routes(Arc<Mutex<HashMap<u32, BTreeMap<String, SocketAddr>>>>);

impl Routes {
    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<u32, BTreeMap<String, SocketAddr>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Starts the proxy for one backend of one template; returns where it listens.
pub(super) fn serve(backend: String, routes: Routes) -> Result<SocketAddr, EdgeError> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(|e| {
        EdgeError::Runtime(format!(
            "cannot bind the proxy for backend `{backend}`: {e}"
        ))
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| EdgeError::Runtime(e.to_string()))?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (backend, routes) = (backend.clone(), routes.clone());
            std::thread::spawn(move || forward(stream, addr, &backend, &routes));
        }
    });
    Ok(addr)
}

fn forward(from_worker: TcpStream, proxy: SocketAddr, backend: &str, routes: &Routes) {
    let Ok(peer) = from_worker.peer_addr() else {
        return;
    };
    let Some(mock) = mock_for(peer, proxy, backend, routes) else {
        // No test owns this connection any more: closing it fails the guest's request.
        return;
    };
    let Ok(to_mock) = TcpStream::connect(mock) else {
        return;
    };
    let _ = from_worker.set_nodelay(true);
    let _ = to_mock.set_nodelay(true);
    let (Ok(mut worker_read), Ok(mut mock_write)) = (from_worker.try_clone(), to_mock.try_clone())
    else {
        return;
    };
    let upstream = std::thread::spawn(move || {
        let _ = std::io::copy(&mut worker_read, &mut mock_write);
        let _ = mock_write.shutdown(Shutdown::Write);
    });
    let (mut mock_read, mut worker_write) = (to_mock, from_worker);
    let _ = std::io::copy(&mut mock_read, &mut worker_write);
    let _ = worker_write.shutdown(Shutdown::Write);
    let _ = upstream.join();
}

/// The owning worker's mock for `backend`. The route is registered at fork time, before
/// the worker can run a guest; a short retry covers a reaper racing a new worker.
fn mock_for(
    peer: SocketAddr,
    proxy: SocketAddr,
    backend: &str,
    routes: &Routes,
) -> Option<SocketAddr> {
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        let workers: Vec<u32> = routes.lock().keys().copied().collect();
        if let Some(pid) = owner_of(peer, proxy, &workers) {
            if let Some(mock) = routes
                .lock()
                .get(&pid)
                .and_then(|m| m.get(backend))
                .copied()
            {
                return Some(mock);
            }
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Which of `candidates` holds the client end of the loopback connection `peer -> proxy`:
/// its socket inode from /proc/net/tcp, then the process whose descriptors include it.
fn owner_of(peer: SocketAddr, proxy: SocketAddr, candidates: &[u32]) -> Option<u32> {
    let inode = socket_inode(peer, proxy)?;
    let target = format!("socket:[{inode}]");
    candidates.iter().copied().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten().any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == target.as_str())
            })
        })
    })
}

fn socket_inode(local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let (SocketAddr::V4(local), SocketAddr::V4(remote)) = (local, remote) else {
        return None;
    };
    let hex = |addr: std::net::SocketAddrV4| {
        format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(addr.ip().octets()),
            addr.port()
        )
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = BufReader::new(std::fs::File::open("/proc/net/tcp").ok()?);
    table
        .lines()
        .map_while(Result::ok)
        .skip(1)
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
                .then(|| fields.get(9)?.parse().ok())
                .flatten()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_process_on_the_other_end_of_a_loopback_connection() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let proxy = listener.local_addr().unwrap();
        let client = TcpStream::connect(proxy).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());

        let me = std::process::id();
        assert_eq!(owner_of(peer, proxy, &[1, me]), Some(me));
        assert_eq!(
            owner_of(peer, proxy, &[1]),
            None,
            "pid 1 does not hold this socket"
        );
    }
}
