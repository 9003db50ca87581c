//! Carries a worker's backend traffic to the mocks of the test that owns it.
//!
//! A template is compiled once, so its backends point at fixed addresses: one loopback
//! proxy per backend, in the host. Every worker forked from the template connects there;
//! the proxy tells workers apart by the process on the other end of the connection (its
//! socket found through the kernel's socket diagnostics, its process through /proc), and
//! forwards the bytes to that worker's test's mock for the backend.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::{Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::EdgeError;

/// Worker pid -> that test's mock address for each backend.
#[derive(Clone, Default)]
pub(super) struct Routes(Arc<Mutex<HashMap<u32, BTreeMap<String, SocketAddr>>>>);

impl Routes {
    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<u32, BTreeMap<String, SocketAddr>>> {
        crate::sync::lock(&self.0)
    }
}

/// Starts the proxy for one backend of one template; returns where it listens.
pub(super) fn serve(backend: String, routes: Routes) -> Result<Proxy, EdgeError> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| EdgeError::io(format!("cannot bind the proxy for backend `{backend}`"), e))?;
    let addr = listener.local_addr().map_err(|e| {
        EdgeError::io(
            format!("cannot read the address of the proxy for `{backend}`"),
            e,
        )
    })?;
    let stop = listener
        .try_clone()
        .map_err(|e| EdgeError::io(format!("cannot share the proxy for `{backend}`"), e))?;
    std::thread::spawn(move || {
        // Ends when the proxy is stopped: its listener then fails every accept.
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let (backend, routes) = (backend.clone(), routes.clone());
            std::thread::spawn(move || forward(stream, addr, &backend, &routes));
        }
    });
    Ok(Proxy { addr, stop })
}

/// A running proxy: stopped (its port closed, its thread ended) when dropped, with the
/// template whose backends point at it.
pub(super) struct Proxy {
    pub(super) addr: SocketAddr,
    stop: TcpListener,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Wakes the accepting thread with an error (Linux), which ends it.
        let _ = rustix::net::shutdown(&self.stop, rustix::net::Shutdown::Read);
    }
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
    crate::sync::poll_until(Duration::from_millis(500), Duration::from_millis(2), || {
        let workers: Vec<u32> = routes.lock().keys().copied().collect();
        let owner = owner_of(peer, proxy, &workers);
        match owner.and_then(|pid| routes.lock().get(&pid)?.get(backend).copied()) {
            Some(mock) => std::ops::ControlFlow::Break(mock),
            None => std::ops::ControlFlow::Continue(()),
        }
    })
}

/// Which of `candidates` holds the client end of the loopback connection `peer -> proxy`:
/// its socket inode, then the process whose descriptors include it.
fn owner_of(peer: SocketAddr, proxy: SocketAddr, candidates: &[u32]) -> Option<u32> {
    let (SocketAddr::V4(peer), SocketAddr::V4(proxy)) = (peer, proxy) else {
        return None;
    };
    let inode =
        socket_inode_by_netlink(peer, proxy).or_else(|| socket_inode_in_proc(peer, proxy))?;
    let target = format!("socket:[{inode}]");
    candidates.iter().copied().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten().any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|link| link.as_os_str() == target.as_str())
            })
        })
    })
}

/// The inode of the TCP socket bound to `local` and connected to `remote`, looked up by the
/// kernel's socket-diagnostics netlink interface: one exact lookup, where /proc/net/tcp
/// prints every socket of the machine (thousands, with the connections of a long run
/// waiting out TIME_WAIT). `None` where that interface is unavailable.
fn socket_inode_by_netlink(local: SocketAddrV4, remote: SocketAddrV4) -> Option<u64> {
    use rustix::net::netlink::{self, SocketAddrNetlink};
    use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

    let socket = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(netlink::SOCK_DIAG),
    )
    .ok()?;
    let request = sock_diag::request(local, remote);
    let sent = rustix::net::sendto(
        &socket,
        &request,
        SendFlags::empty(),
        &SocketAddrNetlink::new(0, 0),
    );
    if sent.ok()? != request.len() {
        return None;
    }
    let mut reply = [0u8; 512];
    let (received, _) = rustix::net::recv(&socket, &mut reply[..], RecvFlags::empty()).ok()?;
    // An error (no such socket, no tcp_diag module) comes back as NLMSG_ERROR instead.
    sock_diag::inode(&reply[..received]).map(u64::from)
}

/// The kernel's socket-diagnostics messages, from <linux/netlink.h>, <linux/sock_diag.h>
/// and <linux/inet_diag.h>, as `#[repr(C)]` structs: they only give the fields' places
/// (`offset_of!`), where bytes are written and read.
mod sock_diag {
    use std::mem::{offset_of, size_of};
    use std::net::SocketAddrV4;

    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 1;

    /// `struct nlmsghdr`
    #[allow(dead_code)]
    #[repr(C)]
    struct Header {
        len: u32,
        kind: u16,
        flags: u16,
        seq: u32,
        pid: u32,
    }

    /// `struct inet_diag_sockid`: ports and addresses in network order.
    #[allow(dead_code)]
    #[repr(C)]
    struct SocketId {
        sport: [u8; 2],
        dport: [u8; 2],
        src: [u8; 16],
        dst: [u8; 16],
        interface: u32,
        cookie: [u32; 2],
    }

    /// `struct inet_diag_req_v2`
    #[allow(dead_code)]
    #[repr(C)]
    struct Request {
        family: u8,
        protocol: u8,
        ext: u8,
        pad: u8,
        states: u32,
        id: SocketId,
    }

    /// `struct inet_diag_msg`, up to the inode.
    #[allow(dead_code)]
    #[repr(C)]
    struct Reply {
        family: u8,
        state: u8,
        timer: u8,
        retrans: u8,
        id: SocketId,
        expires: u32,
        rqueue: u32,
        wqueue: u32,
        uid: u32,
        inode: u32,
    }

    #[allow(dead_code)]
    #[repr(C)]
    struct RequestMessage {
        header: Header,
        request: Request,
    }

    #[allow(dead_code)]
    #[repr(C)]
    struct ReplyMessage {
        header: Header,
        reply: Reply,
    }

    const REQUEST_SIZE: usize = size_of::<RequestMessage>();

    /// The exact-match lookup of the TCP socket bound to `local` and connected to
    /// `remote`, in any state (without NLM_F_DUMP, and with the "no cookie" cookie).
    pub(super) fn request(local: SocketAddrV4, remote: SocketAddrV4) -> [u8; REQUEST_SIZE] {
        let mut bytes = [0u8; REQUEST_SIZE];
        let mut put = |at: usize, value: &[u8]| bytes[at..at + value.len()].copy_from_slice(value);
        put(
            offset_of!(RequestMessage, header.len),
            &(REQUEST_SIZE as u32).to_ne_bytes(),
        );
        put(
            offset_of!(RequestMessage, header.kind),
            &SOCK_DIAG_BY_FAMILY.to_ne_bytes(),
        );
        put(
            offset_of!(RequestMessage, header.flags),
            &NLM_F_REQUEST.to_ne_bytes(),
        );
        put(
            offset_of!(RequestMessage, request.family),
            &[libc::AF_INET as u8],
        );
        put(
            offset_of!(RequestMessage, request.protocol),
            &[libc::IPPROTO_TCP as u8],
        );
        put(
            offset_of!(RequestMessage, request.states),
            &u32::MAX.to_ne_bytes(),
        );
        put(
            offset_of!(RequestMessage, request.id.sport),
            &local.port().to_be_bytes(),
        );
        put(
            offset_of!(RequestMessage, request.id.dport),
            &remote.port().to_be_bytes(),
        );
        put(
            offset_of!(RequestMessage, request.id.src),
            &local.ip().octets(),
        );
        put(
            offset_of!(RequestMessage, request.id.dst),
            &remote.ip().octets(),
        );
        put(offset_of!(RequestMessage, request.id.cookie), &[0xff; 8]);
        bytes
    }

    /// The socket's inode in a reply, when the reply is a socket (not an error).
    pub(super) fn inode(reply: &[u8]) -> Option<u32> {
        let field = |at: usize, len: usize| reply.get(at..at + len);
        let kind = field(offset_of!(ReplyMessage, header.kind), 2)?;
        if u16::from_ne_bytes(kind.try_into().ok()?) != SOCK_DIAG_BY_FAMILY {
            return None;
        }
        let inode = field(offset_of!(ReplyMessage, reply.inode), 4)?;
        Some(u32::from_ne_bytes(inode.try_into().ok()?))
    }

    #[test]
    fn the_structs_have_the_kernels_layout() {
        assert_eq!(size_of::<Header>(), 16);
        assert_eq!(size_of::<Request>(), 56);
        assert_eq!(offset_of!(Reply, inode), 68);
    }
}

/// The same lookup through /proc/net/tcp, for kernels without socket diagnostics.
fn socket_inode_in_proc(local: SocketAddrV4, remote: SocketAddrV4) -> Option<u64> {
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

    #[test]
    fn netlink_and_proc_agree_on_the_socket() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let Ok(SocketAddr::V4(proxy)) = listener.local_addr() else {
            unreachable!("bound to an IPv4 address")
        };
        let _client = TcpStream::connect(proxy).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        let SocketAddr::V4(peer) = peer else {
            unreachable!("an IPv4 peer")
        };
        let from_proc = socket_inode_in_proc(peer, proxy);
        assert!(from_proc.is_some(), "/proc/net/tcp lists the connection");
        // Socket diagnostics can be missing (no tcp_diag module); when present, they agree.
        if let Some(from_netlink) = socket_inode_by_netlink(peer, proxy) {
            assert_eq!(Some(from_netlink), from_proc);
        }
        // And a connection that does not exist is not found.
        let nowhere = SocketAddrV4::new(*peer.ip(), 1);
        assert_eq!(socket_inode_by_netlink(nowhere, proxy), None);
    }
}
