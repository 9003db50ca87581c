//! Keeps a guest off the network: its only way out is its mocked backends.
//!
//! Backends declared in `fastly.toml` point at mocks, but a guest can also open a dynamic
//! backend (`Backend::builder`) to any address, and viceroy connects to it directly. The
//! fence catches that at the system call: a seccomp filter on the guest's thread (and
//! every thread it starts: tokio's blocking pool, where host names are resolved) hands each
//! `connect` to a supervisor thread, which lets through connections to the guest's backend
//! addresses and to non-internet sockets, and refuses the rest with `ECONNREFUSED`,
//! keeping a note of each for the test's report. The guest sees a failed connection, at
//! once, instead of a timeout or a real server.

/// What the guest tried to reach and was refused: "TCP 203.0.113.9:80".
pub(crate) type Refused = String;

pub(crate) use imp::NetworkFence;

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod imp {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;

    use super::Refused;

    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xC000_00B7;

    pub(crate) struct NetworkFence {
        refused: Arc<Mutex<Vec<Refused>>>,
        /// The write end of a pipe the supervisor watches: dropping it stops the supervisor.
        stop: Option<OwnedFd>,
        supervisor: Option<JoinHandle<()>>,
    }

    impl NetworkFence {
        /// Fences the calling thread and every thread it starts from now on. `Err` says why
        /// the kernel will not have it (no seccomp, or a supervisor already there, as under
        /// some sandboxes and CI runners): the guest then runs unfenced, as it would without
        /// edge-test.
        pub(crate) fn install(allowed: Vec<SocketAddr>) -> Result<Self, String> {
            let (stop_reader, stop) =
                pipe().map_err(|e| format!("cannot make the fence's stop pipe: {e}"))?;
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
                            supervise(listener, stop_reader, &allowed, &refused);
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
            std::mem::take(&mut self.refused.lock().unwrap_or_else(|p| p.into_inner()))
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

    fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
    }

    /// `connect` goes to the listener; every other system call runs as usual.
    fn install_filter() -> Result<OwnedFd, String> {
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
            statement(load, 4), // seccomp_data.arch
            jump(AUDIT_ARCH, 3),
            statement(load, 0), // seccomp_data.nr
            jump(libc::SYS_connect as u32, 1),
            statement(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_USER_NOTIF),
            statement(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
        ];
        let prog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_mut_ptr(),
        };
        // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes plain integers. Required to install
        // a filter without privileges; it only stops this thread's future execve from
        // gaining privileges, and the guest never execs.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(format!(
                "prctl(PR_SET_NO_NEW_PRIVS) failed: {}",
                std::io::Error::last_os_error()
            ));
        }
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
                    " (this process is already under a seccomp supervisor, as in some sandboxes and CI runners)"
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
        refused: &Mutex<Vec<Refused>>,
    ) {
        loop {
            let mut watch = [
                libc::pollfd {
                    fd: listener.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: stop.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let ready = unsafe { libc::poll(watch.as_mut_ptr(), 2, -1) };
            if ready < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            // The fence was dropped, or every fenced thread is gone.
            if watch[1].revents != 0 || watch[0].revents & libc::POLLHUP != 0 {
                return;
            }
            if watch[0].revents & libc::POLLIN == 0 {
                continue;
            }
            let mut notice: libc::seccomp_notif = unsafe { std::mem::zeroed() };
            if unsafe {
                libc::ioctl(
                    listener.as_raw_fd(),
                    libc::SECCOMP_IOCTL_NOTIF_RECV,
                    &mut notice,
                )
            } != 0
            {
                // The thread that called connect is gone already.
                continue;
            }
            let [fd, address, length, ..] = notice.data.args;
            let verdict = match destination(address, length) {
                Some(to) if !allowed.contains(&to) => {
                    let kind = socket_kind(fd as i32);
                    let what = if kind == "UDP" && to.port() == 53 {
                        format!("{kind} {to} (a DNS lookup)")
                    } else {
                        format!("{kind} {to}")
                    };
                    let mut refused = refused.lock().unwrap_or_else(|p| p.into_inner());
                    // Resolvers retry: name each destination once.
                    if !refused.contains(&what) {
                        refused.push(what);
                    }
                    Err(libc::ECONNREFUSED)
                }
                // A mock, or not the internet (a Unix socket, netlink, a disconnect).
                _ => Ok(()),
            };
            let mut answer = libc::seccomp_notif_resp {
                id: notice.id,
                val: 0,
                error: 0,
                flags: 0,
            };
            match verdict {
                Ok(()) => answer.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
                Err(errno) => answer.error = -errno,
            }
            unsafe {
                libc::ioctl(
                    listener.as_raw_fd(),
                    libc::SECCOMP_IOCTL_NOTIF_SEND,
                    &mut answer,
                );
            }
        }
    }

    /// The internet address a `connect` asks for, read from this process's own memory (the
    /// fenced threads are this process's): through `process_vm_readv`, so that a bad
    /// pointer is an error rather than a crash.
    fn destination(address: u64, length: u64) -> Option<SocketAddr> {
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let wanted = (length as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
        let local = libc::iovec {
            iov_base: (&mut storage as *mut libc::sockaddr_storage).cast(),
            iov_len: wanted,
        };
        let remote = libc::iovec {
            iov_base: address as *mut libc::c_void,
            iov_len: wanted,
        };
        let read = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
        if read < 0 || (read as usize) < std::mem::size_of::<libc::sa_family_t>() {
            return None;
        }
        match i32::from(storage.ss_family) {
            libc::AF_INET if read as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
                let v4: libc::sockaddr_in =
                    unsafe { std::ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)),
                    u16::from_be(v4.sin_port),
                )))
            }
            libc::AF_INET6 if read as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
                let v6: libc::sockaddr_in6 =
                    unsafe { std::ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(v6.sin6_addr.s6_addr),
                    u16::from_be(v6.sin6_port),
                    v6.sin6_flowinfo,
                    v6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// TCP or UDP (UDP to port 53 is a DNS lookup), for the report: the fenced threads share
    /// this process's descriptors.
    fn socket_kind(fd: i32) -> &'static str {
        let mut kind: libc::c_int = 0;
        let mut size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let asked = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_TYPE,
                (&mut kind as *mut libc::c_int).cast(),
                &mut size,
            )
        };
        match (asked, kind) {
            (0, libc::SOCK_STREAM) => "TCP",
            (0, libc::SOCK_DGRAM) => "UDP",
            _ => "socket",
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
        pub(crate) fn install(_allowed: Vec<SocketAddr>) -> Result<Self, String> {
            Err("the network fence is built for Linux on x86_64 and aarch64 only".to_owned())
        }

        pub(crate) fn take_refused(&self) -> Vec<Refused> {
            Vec::new()
        }
    }
}
