//! Keeps a guest's connections to its mocked backends.
//!
//! Backends declared in `fastly.toml` point at mocks, but a guest can also open a dynamic
//! backend (`Backend::builder`) to any address, and viceroy connects to it directly. The
//! fence catches that at the system call: a seccomp filter on the guest's thread (and
//! every thread it starts: tokio's blocking pool, where host names are resolved) hands each
//! `connect` to a supervisor thread, which lets through connections to the guest's backend
//! addresses and to non-internet sockets, and refuses the rest with `ECONNREFUSED`,
//! keeping a note of each for the test's report. The guest sees a failed connection, at
//! once, instead of a timeout or a real server.
//!
//! It also completes the redirection of dynamic backends (`module_rewrite`): a `connect` to
//! a redirected backend's address (`127.0.0.2:<n>`, where nothing listens) is answered by
//! putting, in place of the guest's socket, one already connected to the test's
//! dynamic-backend dispatcher (`SECCOMP_IOCTL_NOTIF_ADDFD`), and returning success.
//!
//! # Threat model
//!
//! The fence keeps a *test* honest, not a hostile program in. The code it watches is a
//! wasm guest, which has no system calls of its own: it reaches sockets only through
//! viceroy's hostcalls, which viceroy serves with `connect` on the guest's thread or the
//! threads that thread starts. So the fence stops what a service under test can do by
//! mistake: a dynamic backend to a real host, a name lookup for one (UDP `connect` to port
//! 53, as resolvers do), a backend the test forgot to mock.
//!
//! It does not stop, and need not: a `sendto` with an address on an unconnected socket, or
//! io_uring (viceroy uses neither for guests); threads the guest's thread did not start
//! (the test's own, the mocks', the host's proxies); anything on architectures other than
//! x86_64 and aarch64 (their calls are allowed through: the filter checks the
//! architecture first). Where the kernel refuses the filter (no seccomp, or another
//! supervisor already in place, as under some sandboxes), the guest runs unfenced and the
//! test run is warned once.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What the guest tried to reach and was refused: "TCP 203.0.113.9:80".
pub(crate) type Refused = String;

pub(crate) use imp::NetworkFence;

/// The kind of socket a `connect` was made on, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SocketKind {
    Tcp,
    Udp,
    Other,
}

/// The fence's rule: a `connect` to an internet address that is not one of the guest's
/// backends is refused, described for the report; anything else (a mock, a Unix socket,
/// netlink, a disconnect) goes through.
fn judge(to: Option<SocketAddr>, kind: SocketKind, allowed: &[SocketAddr]) -> Option<Refused> {
    let to = to.filter(|to| !allowed.contains(to))?;
    Some(match kind {
        SocketKind::Udp if to.port() == 53 => format!("UDP {to} (a DNS lookup)"),
        SocketKind::Udp => format!("UDP {to}"),
        SocketKind::Tcp => format!("TCP {to}"),
        SocketKind::Other => format!("socket {to}"),
    })
}

/// The internet address in a `sockaddr` as `connect` received it: `sockaddr_in` or
/// `sockaddr_in6`, read field by field at the places the C structs give them.
fn internet_address(sockaddr: &[u8]) -> Option<SocketAddr> {
    use std::mem::{offset_of, size_of};
    let field = |at: usize, len: usize| sockaddr.get(at..at + len);
    let family = field(0, size_of::<libc::sa_family_t>())?;
    let family = libc::sa_family_t::from_ne_bytes(family.try_into().ok()?);
    match i32::from(family) {
        libc::AF_INET if sockaddr.len() >= size_of::<libc::sockaddr_in>() => {
            let port = field(offset_of!(libc::sockaddr_in, sin_port), 2)?;
            let ip: [u8; 4] = field(offset_of!(libc::sockaddr_in, sin_addr), 4)?
                .try_into()
                .ok()?;
            Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(ip)),
                u16::from_be_bytes(port.try_into().ok()?),
            ))
        }
        libc::AF_INET6 if sockaddr.len() >= size_of::<libc::sockaddr_in6>() => {
            let port = field(offset_of!(libc::sockaddr_in6, sin6_port), 2)?;
            let ip: [u8; 16] = field(offset_of!(libc::sockaddr_in6, sin6_addr), 16)?
                .try_into()
                .ok()?;
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(ip)),
                u16::from_be_bytes(port.try_into().ok()?),
            ))
        }
        _ => None,
    }
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod imp {
    // The filter, its notifications and reading the fenced thread's memory have no safe
    // wrappers: each unsafe block below says why it is sound.
    #![allow(unsafe_code)]

    use std::net::SocketAddr;
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;

    use rustix::event::{PollFd, PollFlags, poll};

    use super::super::dynamic_backends::DynamicSlots;
    use super::{Refused, SocketKind, internet_address, judge};

    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xC000_00B7;

    pub(crate) struct NetworkFence {
        refused: Arc<Mutex<Vec<Refused>>>,
        /// The write end of a pipe the supervisor watches: dropping it stops the supervisor.
        stop: Option<std::io::PipeWriter>,
        supervisor: Option<JoinHandle<()>>,
    }

    impl NetworkFence {
        /// Fences the calling thread and every thread it starts from now on. `Err` says why
        /// the kernel will not have it (no seccomp, or a supervisor already there, as under
        /// some sandboxes and CI runners): the guest then runs unfenced, as it would without
        /// edge-test.
        pub(crate) fn install(
            allowed: Vec<SocketAddr>,
            slots: DynamicSlots,
        ) -> Result<Self, String> {
            let (stop_reader, stop) =
                std::io::pipe().map_err(|e| format!("cannot make the fence's stop pipe: {e}"))?;
            let refused = Arc::new(Mutex::new(Vec::new()));
            // The supervisor starts before the filter exists, so that it does not inherit
            // it, and is handed the listener once there is one.
            let (hand_over, listener) = std::sync::mpsc::channel::<OwnedFd>();
            let supervisor = {
                let refused = refused.clone();
                std::thread::Builder::new()
                    .name("edge-test fence".into())
                    .spawn(move || {
                        if let Ok(listener) = listener.recv() {
                            supervise(listener, stop_reader.into(), &allowed, &slots, &refused);
                        }
                    })
                    .map_err(|e| format!("cannot start the fence's supervisor thread: {e}"))?
            };
            let installed = install_filter();
            let handed_over = installed.and_then(|listener| {
                hand_over
                    .send(listener)
                    .map_err(|_| "the fence's supervisor thread is gone".to_owned())
            });
            // Without a listener, the supervisor's `recv` ends only once this sender is gone:
            // drop it before anything joins the supervisor.
            drop(hand_over);
            let fence = Self {
                refused,
                stop: Some(stop),
                supervisor: Some(supervisor),
            };
            handed_over.map(|()| fence)
        }

        pub(crate) fn take_refused(&self) -> Vec<Refused> {
            std::mem::take(&mut crate::sync::lock(&self.refused))
        }
    }

    impl Drop for NetworkFence {
        fn drop(&mut self) {
            // Closing the pipe's write end wakes the supervisor.
            self.stop.take();
            if let Some(supervisor) = self.supervisor.take() {
                let _ = supervisor.join();
            }
        }
    }

    /// `connect` goes to the listener; every other system call, and every call made in
    /// another architecture's convention, runs as usual.
    fn install_filter() -> Result<OwnedFd, String> {
        use std::mem::offset_of;
        let statement = |code: u32, k: u32| libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        };
        let jump = |k: u32, jf: u8| libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf,
            k,
        };
        let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
        let mut program = [
            statement(load, offset_of!(libc::seccomp_data, arch) as u32),
            jump(AUDIT_ARCH, 3),
            statement(load, offset_of!(libc::seccomp_data, nr) as u32),
            jump(libc::SYS_connect as u32, 1),
            statement(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_USER_NOTIF),
            statement(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
        ];
        let prog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_mut_ptr(),
        };
        // Required to install a filter without privileges. It only stops this thread's
        // future execve from gaining privileges; the guest never execs.
        rustix::thread::set_no_new_privs(true)
            .map_err(|e| format!("prctl(PR_SET_NO_NEW_PRIVS) failed: {e}"))?;
        // SAFETY: `prog` points at `program`, both alive for the call; the kernel copies the
        // filter before it returns.
        let listener = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &prog as *const libc::sock_fprog,
            )
        };
        if listener < 0 {
            let error = std::io::Error::last_os_error();
            let why = match error.raw_os_error() {
                Some(libc::EBUSY) => {
                    " (this process is already under a seccomp supervisor, as in some \
                     sandboxes and CI runners)"
                }
                Some(libc::ENOSYS | libc::EINVAL) => {
                    " (this kernel has no seccomp user notification)"
                }
                _ => "",
            };
            return Err(format!("seccomp refused the fence: {error}{why}"));
        }
        // SAFETY: the call succeeded, so `listener` is a new descriptor this thread owns.
        Ok(unsafe { OwnedFd::from_raw_fd(listener as i32) })
    }

    fn supervise(
        listener: OwnedFd,
        stop: OwnedFd,
        allowed: &[SocketAddr],
        slots: &DynamicSlots,
        refused: &Mutex<Vec<Refused>>,
    ) {
        loop {
            let mut watch = [
                PollFd::new(&listener, PollFlags::IN),
                PollFd::new(&stop, PollFlags::IN),
            ];
            match poll(&mut watch, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return,
            }
            // The fence was dropped, or every fenced thread is gone.
            if !watch[1].revents().is_empty() || watch[0].revents().contains(PollFlags::HUP) {
                return;
            }
            if !watch[0].revents().contains(PollFlags::IN) {
                continue;
            }
            let Some(notice) = receive(&listener) else {
                // The thread that called connect is gone already.
                continue;
            };
            let [fd, address, length, ..] = notice.data.args;
            let to = destination(address, length);
            let redirected = to.and_then(|to| slots.connect(to));
            let refusal = match redirected {
                Some(Ok(connected)) => {
                    if hand_over(&listener, notice.id, connected, fd as i32) {
                        answer_connected(&listener, notice.id);
                        continue;
                    }
                    Some("a redirected dynamic backend (the kernel refused the socket)".into())
                }
                Some(Err(why)) => Some(why),
                None => judge(to, socket_kind(fd as i32), allowed),
            };
            if let Some(what) = &refusal {
                let mut refused = crate::sync::lock(refused);
                // Resolvers retry: name each destination once.
                if !refused.contains(what) {
                    refused.push(what.clone());
                }
            }
            answer(&listener, notice.id, refusal.is_none());
        }
    }

    /// The next `connect` waiting for a verdict.
    fn receive(listener: &OwnedFd) -> Option<libc::seccomp_notif> {
        // SAFETY: seccomp_notif is plain integers, for which all zeroes is a valid value
        // (the kernel requires the buffer zeroed).
        let mut notice: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: the ioctl writes one seccomp_notif into `notice`, which is one.
        let received = unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                &mut notice,
            )
        };
        (received == 0).then_some(notice)
    }

    /// Puts `connected` in the waiting thread's descriptor table at `guest_fd`, in place of
    /// the socket it is connecting (closing that one), as `dup2` would.
    fn hand_over(listener: &OwnedFd, id: u64, connected: OwnedFd, guest_fd: i32) -> bool {
        let Ok(guest_fd) = u32::try_from(guest_fd) else {
            return false;
        };
        let mut addfd = libc::seccomp_notif_addfd {
            id,
            flags: libc::SECCOMP_ADDFD_FLAG_SETFD as u32,
            srcfd: connected.as_raw_fd() as u32,
            newfd: guest_fd,
            newfd_flags: libc::O_CLOEXEC as u32,
        };
        // SAFETY: the ioctl reads one seccomp_notif_addfd from `addfd`, which is one; the
        // kernel duplicates `srcfd` (open for the call: `connected` is dropped after it) into
        // the waiting thread, which is this process's, at `guest_fd`, the socket that thread
        // is blocked connecting (nothing else uses it until `connect` returns).
        let added = unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ADDFD,
                &mut addfd,
            )
        };
        added >= 0
    }

    /// Completes the waiting `connect` as a success, without running it: its socket was
    /// replaced by one already connected.
    fn answer_connected(listener: &OwnedFd, id: u64) {
        let mut answer = libc::seccomp_notif_resp {
            id,
            val: 0,
            error: 0,
            flags: 0,
        };
        // SAFETY: as in `answer`.
        unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &mut answer,
            );
        }
    }

    /// Lets the waiting `connect` run, or fails it with ECONNREFUSED.
    fn answer(listener: &OwnedFd, id: u64, allow: bool) {
        let mut answer = libc::seccomp_notif_resp {
            id,
            val: 0,
            error: if allow { 0 } else { -libc::ECONNREFUSED },
            flags: if allow {
                libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32
            } else {
                0
            },
        };
        // SAFETY: the ioctl reads one seccomp_notif_resp from `answer`, which is one. If the
        // thread is gone meanwhile, it fails, and there is no one left to answer.
        unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &mut answer,
            );
        }
    }

    /// The address a `connect` asks for, read from this process's own memory (the fenced
    /// threads are this process's): through `process_vm_readv`, so that a bad pointer is an
    /// error rather than a crash.
    fn destination(address: u64, length: u64) -> Option<SocketAddr> {
        let mut sockaddr = [0u8; std::mem::size_of::<libc::sockaddr_storage>()];
        let wanted = (length as usize).min(sockaddr.len());
        let local = libc::iovec {
            iov_base: sockaddr.as_mut_ptr().cast(),
            iov_len: wanted,
        };
        let remote = libc::iovec {
            iov_base: address as *mut libc::c_void,
            iov_len: wanted,
        };
        // SAFETY: the local iovec covers `sockaddr`, which outlives the call; the remote one
        // is only read, by the kernel, which fails the call on an unmapped address.
        let read =
            unsafe { libc::process_vm_readv(std::process::id() as i32, &local, 1, &remote, 1, 0) };
        let read = usize::try_from(read).ok()?;
        internet_address(&sockaddr[..read])
    }

    /// TCP or UDP (UDP to port 53 is a DNS lookup), for the report: the fenced threads share
    /// this process's descriptors.
    fn socket_kind(fd: i32) -> SocketKind {
        // SAFETY: the descriptor is the fenced thread's, which is blocked in `connect` on it
        // until this supervisor answers: it stays open for this call.
        let socket = unsafe { BorrowedFd::borrow_raw(fd) };
        match rustix::net::sockopt::socket_type(socket) {
            Ok(rustix::net::SocketType::STREAM) => SocketKind::Tcp,
            Ok(rustix::net::SocketType::DGRAM) => SocketKind::Udp,
            _ => SocketKind::Other,
        }
    }
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
mod imp {
    use std::net::SocketAddr;

    use super::Refused;

    /// No fence on this platform: guests run as they would without edge-test.
    pub(crate) struct NetworkFence;

    impl NetworkFence {
        pub(crate) fn install(
            _allowed: Vec<SocketAddr>,
            _slots: super::super::dynamic_backends::DynamicSlots,
        ) -> Result<Self, String> {
            Err("the network fence is built for Linux on x86_64 and aarch64 only".to_owned())
        }

        pub(crate) fn take_refused(&self) -> Vec<Refused> {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_internet_addresses_outside_the_backends_are_refused() {
        let mock: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let outside: SocketAddr = "203.0.113.9:80".parse().unwrap();
        let resolver: SocketAddr = "[2001:db8::53]:53".parse().unwrap();
        assert_eq!(judge(Some(mock), SocketKind::Tcp, &[mock]), None);
        assert_eq!(
            judge(Some(outside), SocketKind::Tcp, &[mock]).as_deref(),
            Some("TCP 203.0.113.9:80")
        );
        assert_eq!(
            judge(Some(resolver), SocketKind::Udp, &[mock]).as_deref(),
            Some("UDP [2001:db8::53]:53 (a DNS lookup)")
        );
        assert_eq!(
            judge(
                Some("127.0.0.1:4001".parse().unwrap()),
                SocketKind::Other,
                &[mock]
            )
            .as_deref(),
            Some("socket 127.0.0.1:4001"),
            "another loopback port is not a mock"
        );
        assert_eq!(
            judge(None, SocketKind::Other, &[mock]),
            None,
            "not the internet"
        );
    }

    #[test]
    fn reads_ipv4_and_ipv6_socket_addresses_and_nothing_else() {
        let mut v4 = [0u8; std::mem::size_of::<libc::sockaddr_in>()];
        v4[..2].copy_from_slice(&(libc::AF_INET as libc::sa_family_t).to_ne_bytes());
        v4[2..4].copy_from_slice(&80u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[203, 0, 113, 9]);
        assert_eq!(
            internet_address(&v4),
            Some("203.0.113.9:80".parse().unwrap())
        );
        assert_eq!(internet_address(&v4[..6]), None, "too short for its family");

        let mut v6 = [0u8; std::mem::size_of::<libc::sockaddr_in6>()];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as libc::sa_family_t).to_ne_bytes());
        v6[2..4].copy_from_slice(&443u16.to_be_bytes());
        v6[8..24].copy_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(
            internet_address(&v6),
            Some("[2001:db8::1]:443".parse().unwrap())
        );

        let unix = (libc::AF_UNIX as libc::sa_family_t).to_ne_bytes();
        assert_eq!(internet_address(&unix), None);
    }
}
