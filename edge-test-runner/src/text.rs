//! Text built on the stack: paths, the socket's name, messages. The runner has no heap.

use core::ffi::CStr;
use core::fmt;

/// Up to `N - 1` bytes, always followed by a NUL (a path is passed to the kernel as it is,
/// and a shortened text may leave bytes behind its end).
/// What does not fit is dropped, and `fits` says so.
pub struct Text<const N: usize> {
    bytes: [u8; N],
    len: usize,
    fits: bool,
}

impl<const N: usize> Text<N> {
    pub const fn new() -> Self {
        Self {
            bytes: [0; N],
            len: 0,
            fits: true,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        let room = N - 1 - self.len;
        let taken = bytes.len().min(room);
        self.bytes[self.len..self.len + taken].copy_from_slice(&bytes[..taken]);
        self.len += taken;
        self.bytes[self.len] = 0;
        self.fits &= taken == bytes.len();
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The text as a C string: `None` if it was cut short or holds a NUL.
    pub fn as_c_str(&self) -> Option<&CStr> {
        if !self.fits {
            return None;
        }
        CStr::from_bytes_with_nul(&self.bytes[..=self.len]).ok()
    }

    /// The text without its last `suffix`, if it ends so.
    pub fn strip_suffix(&mut self, suffix: &[u8]) -> bool {
        if self.bytes().ends_with(suffix) {
            self.len -= suffix.len();
            self.bytes[self.len] = 0;
            true
        } else {
            false
        }
    }
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for Text<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes());
        if self.fits { Ok(()) } else { Err(fmt::Error) }
    }
}

/// An environment entry, `NAME=VALUE`, split where std splits it: at the first `=` after
/// the first byte (a name may start with one). `None`: no `=` there, which std skips.
pub fn split_entry(entry: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = entry.iter().skip(1).position(|&b| b == b'=')? + 1;
    Some((&entry[..at], &entry[at + 1..]))
}

/// A system call's error as std shows it (`Permission denied (os error 13)`): rustix
/// without std names only the number. The errors the runner can meet are named; any other
/// is its number.
pub struct OsError(pub i32);

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            1 => "Operation not permitted",
            2 => "No such file or directory",
            4 => "Interrupted system call",
            5 => "Input/output error",
            7 => "Argument list too long",
            8 => "Exec format error",
            11 => "Resource temporarily unavailable",
            12 => "Cannot allocate memory",
            13 => "Permission denied",
            20 => "Not a directory",
            21 => "Is a directory",
            22 => "Invalid argument",
            24 => "Too many open files",
            26 => "Text file busy",
            32 => "Broken pipe",
            36 => "File name too long",
            40 => "Too many levels of symbolic links",
            104 => "Connection reset by peer",
            111 => "Connection refused",
            _ => return write!(f, "os error {}", self.0),
        };
        write!(f, "{name} (os error {})", self.0)
    }
}

/// Bytes shown as text: a path or a message that may not be UTF-8, its invalid parts
/// replaced (as `Path::display` does).
pub struct Shown<'a>(pub &'a [u8]);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                f.write_str("\u{FFFD}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn a_text_is_a_c_string_after_it_is_shortened_and_grown_again() {
        let mut log = Text::<64>::new();
        log.push(b"/run/edge-test/runner-1.2-3.sock");
        assert!(log.strip_suffix(b".sock"));
        log.push(b".log");
        assert_eq!(log.as_c_str(), Some(c"/run/edge-test/runner-1.2-3.log"));
        assert!(!log.strip_suffix(b".sock"), "it no longer ends so");
    }

    #[test]
    fn what_does_not_fit_is_no_c_string_and_no_formatted_text() {
        let mut path = Text::<8>::new();
        path.push(b"/tmp/");
        assert_eq!(path.as_c_str(), Some(c"/tmp/"));
        path.push(b"edge-test");
        assert_eq!(
            path.bytes(),
            b"/tmp/ed",
            "N - 1 bytes kept, and a NUL after them"
        );
        assert_eq!(
            path.as_c_str(),
            None,
            "a cut path must not reach the kernel"
        );
        let mut number = Text::<4>::new();
        assert!(write!(number, "{}", 12345).is_err());
    }

    #[test]
    fn a_nul_inside_makes_no_c_string() {
        let mut text = Text::<16>::new();
        text.push(b"a\0b");
        assert_eq!(text.as_c_str(), None);
    }

    #[test]
    fn environment_entries_split_as_std_splits_them() {
        assert_eq!(split_entry(b"A=b=c"), Some((&b"A"[..], &b"b=c"[..])));
        assert_eq!(split_entry(b"EMPTY="), Some((&b"EMPTY"[..], &b""[..])));
        // A name may begin with `=` (as cmd.exe's do); the split is at the next one.
        assert_eq!(split_entry(b"=C:=C:\\"), Some((&b"=C:"[..], &b"C:\\"[..])));
        assert_eq!(split_entry(b"NOEQUALS"), None);
        assert_eq!(split_entry(b"="), None);
    }

    #[test]
    fn os_errors_read_as_std_shows_them() {
        assert_eq!(
            OsError(13).to_string(),
            std::io::Error::from_raw_os_error(13).to_string()
        );
        assert_eq!(
            OsError(2).to_string(),
            "No such file or directory (os error 2)"
        );
        assert_eq!(OsError(4095).to_string(), "os error 4095");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_shown_replaced() {
        let shown = format!("{}", Shown(b"/tmp/caf\xe9/runner"));
        assert_eq!(shown, "/tmp/caf\u{FFFD}/runner");
    }
}
