//! The call as it goes on the wire (edge-test-core's `guest_tests::thin_runner` reads it):
//! the magic, the payload's length, and the payload: the working directory, the arguments,
//! the environment, each string its length and its bytes.

use rustix::fd::BorrowedFd;
use rustix::fs::CWD;
use rustix::io::Errno;
use rustix::net::SendFlags;

use crate::Process;

/// The first bytes of a call (`thin_runner::CALL_MAGIC`).
const CALL_MAGIC: u32 = 0xED6E_7E57;

/// Sends the call for `process` on `socket`.
pub fn send(socket: BorrowedFd<'_>, process: &Process) -> Result<(), Errno> {
    let mut cwd = [0u8; 4096];
    // As `std::env::current_dir().unwrap_or_default()`: none sends an empty one.
    let cwd = match rustix::fs::readlinkat_raw(CWD, c"/proc/self/cwd", &mut cwd[..]) {
        Ok(length) if length < cwd.len() => &cwd[..length],
        _ => &[],
    };
    let env = || {
        process
            .env()
            .map(|entry| entry.to_bytes())
            .filter(|entry| edge_test_runner::text::split_entry(entry).is_some())
    };
    let strings = |strings: &mut dyn Iterator<Item = &[u8]>| {
        strings.map(|string| 4 + string.len()).sum::<usize>()
    };
    let payload = 4
        + cwd.len()
        + 4
        + strings(&mut process.args().map(|arg| arg.to_bytes()))
        + 4
        + strings(&mut env());
    let payload = u32::try_from(payload).map_err(|_| Errno::TOOBIG)?;

    let mut out = Out {
        socket,
        buffer: [0; 16 * 1024],
        len: 0,
    };
    out.put(&CALL_MAGIC.to_le_bytes())?;
    out.put(&payload.to_le_bytes())?;
    out.string(cwd)?;
    out.put(&(process.args().len() as u32).to_le_bytes())?;
    for arg in process.args() {
        out.string(arg.to_bytes())?;
    }
    out.put(&(env().count() as u32).to_le_bytes())?;
    for entry in env() {
        out.string(entry)?;
    }
    out.flush()
}

/// The call on its way out, a buffer at a time.
struct Out<'a> {
    socket: BorrowedFd<'a>,
    buffer: [u8; 16 * 1024],
    len: usize,
}

impl Out<'_> {
    fn string(&mut self, bytes: &[u8]) -> Result<(), Errno> {
        self.put(&(bytes.len() as u32).to_le_bytes())?;
        self.put(bytes)
    }

    fn put(&mut self, mut bytes: &[u8]) -> Result<(), Errno> {
        while !bytes.is_empty() {
            if self.len == self.buffer.len() {
                self.flush()?;
            }
            let taken = bytes.len().min(self.buffer.len() - self.len);
            self.buffer[self.len..self.len + taken].copy_from_slice(&bytes[..taken]);
            self.len += taken;
            bytes = &bytes[taken..];
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Errno> {
        let mut sent = 0;
        while sent < self.len {
            match rustix::net::send(
                self.socket,
                &self.buffer[sent..self.len],
                SendFlags::NOSIGNAL,
            ) {
                Ok(0) => return Err(Errno::PIPE),
                Ok(n) => sent += n,
                Err(Errno::INTR) => {}
                Err(e) => return Err(e),
            }
        }
        self.len = 0;
        Ok(())
    }
}
