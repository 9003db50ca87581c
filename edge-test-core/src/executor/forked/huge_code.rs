//! The host's code in huge pages, so that a worker finds it mapped.
//!
//! `fork` does not copy the page tables of a file mapping that has no private pages: the
//! child faults the binary's code in again, 64 KiB around each fault, and unmaps all of it
//! at its exit. A worker runs code the host never ran (the guest's calls into viceroy and
//! wasmtime), scattered across a binary of tens of megabytes: about a hundred such faults
//! per worker, and thousands of entries to tear down. The host copies the 2 MiB-aligned
//! inside of its binary's read-only and executable mappings into anonymous memory backed
//! by huge pages, and moves the copy over the original (the same bytes at the same
//! addresses): a fork copies one entry per 2 MiB, the worker takes no fault for code, and
//! its exit drops a few entries. `EDGE_TEST_HOST_HUGE_CODE=0` leaves the code as it is (a
//! profiler then still finds the binary behind every address).

#![allow(unsafe_code)]

use std::ffi::c_void;

use rustix::mm::{Advice, MapFlags, MprotectFlags, MremapFlags, ProtFlags};

const HUGE_PAGE: usize = 2 << 20;

/// `EDGE_TEST_HOST_HUGE_CODE=0`: the code stays in the binary's mappings.
pub(super) fn wanted() -> bool {
    std::env::var_os("EDGE_TEST_HOST_HUGE_CODE").is_none_or(|v| v != "0")
}

/// Moves this binary's code into huge pages; the bytes moved, or why not (what was not
/// moved stays as it was). Called by the host before it starts any thread; safe with others
/// running too (the same bytes stay at the same addresses throughout).
pub(super) fn move_code_to_huge_pages() -> Result<usize, String> {
    let mut moved = 0;
    for mapping in code_mappings()? {
        if let Some((from, to)) = mapping.huge_inside() {
            move_to_huge_pages(from, to - from, mapping.executable)?;
            moved += to - from;
        }
    }
    Ok(moved)
}

/// A read-only or executable mapping of this binary's file.
struct CodeMapping {
    start: usize,
    end: usize,
    executable: bool,
}

impl CodeMapping {
    /// The part of it huge pages can hold: from its first 2 MiB boundary to its last.
    fn huge_inside(&self) -> Option<(usize, usize)> {
        let (from, to) = (
            self.start.next_multiple_of(HUGE_PAGE),
            self.end / HUGE_PAGE * HUGE_PAGE,
        );
        (to > from).then_some((from, to))
    }
}

/// This binary's read-only and executable file mappings, as `/proc/self/maps` lists them.
fn code_mappings() -> Result<Vec<CodeMapping>, String> {
    let exe =
        std::fs::read_link("/proc/self/exe").map_err(|e| format!("no /proc/self/exe: {e}"))?;
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| format!("no maps: {e}"))?;
    Ok(maps
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [range, perms, _offset, _device, _inode, path] = fields[..] else {
                return None;
            };
            if std::path::Path::new(path) != exe || !matches!(perms, "r-xp" | "r--p") {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some(CodeMapping {
                start: usize::from_str_radix(start, 16).ok()?,
                end: usize::from_str_radix(end, 16).ok()?,
                executable: perms == "r-xp",
            })
        })
        .collect())
}

fn move_to_huge_pages(address: usize, length: usize, executable: bool) -> Result<(), String> {
    let failed = |what: &str, e: rustix::io::Errno| format!("{what}: {e}");
    // SAFETY: a new private anonymous mapping; no existing memory is touched.
    let area = unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            length + HUGE_PAGE,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )
    }
    .map_err(|e| failed("mmap", e))?;
    let copy = (area as usize).next_multiple_of(HUGE_PAGE);
    // SAFETY: `copy..copy + length` lies in `area`, which this function owns; `address..
    // address + length` is mapped readable (the maps say so) and nothing writes to it (it
    // is the binary's read-only and executable memory).
    unsafe {
        let _ = rustix::mm::madvise(copy as *mut c_void, length, Advice::LinuxHugepage);
        std::ptr::copy_nonoverlapping(address as *const u8, copy as *mut u8, length);
    }
    // In 4 KiB pages (no huge page free, or none allowed) the copy would cost every fork an
    // entry per page: the original stays.
    let huge = huge_bytes_at(copy);
    if huge < length {
        // SAFETY: `area` is this function's own mapping, and nothing points into it.
        let _ = unsafe { rustix::mm::munmap(area, length + HUGE_PAGE) };
        return Err(format!(
            "the kernel gave {} of {} MiB in huge pages (transparent huge pages: {})",
            huge >> 20,
            length >> 20,
            std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
                .unwrap_or_default()
                .trim()
        ));
    }
    // SAFETY: as above for `area`; `mremap` replaces the original with the copy in one step,
    // so code running there (this thread's caller, or a thread started before this was
    // called) reads the same bytes before and after, at the same addresses.
    unsafe {
        let protection = if executable {
            MprotectFlags::READ | MprotectFlags::EXEC
        } else {
            MprotectFlags::READ
        };
        rustix::mm::mprotect(copy as *mut c_void, length, protection)
            .map_err(|e| failed("mprotect", e))?;
        rustix::mm::mremap_fixed(
            copy as *mut c_void,
            length,
            length,
            MremapFlags::MAYMOVE,
            address as *mut c_void,
        )
        .map_err(|e| failed("mremap", e))?;
        let head = copy - area as usize;
        if head > 0 {
            let _ = rustix::mm::munmap(area, head);
        }
        let tail = HUGE_PAGE - head;
        if tail > 0 {
            let _ = rustix::mm::munmap((copy + length) as *mut c_void, tail);
        }
    }
    Ok(())
}

/// How much of the mapping that starts at `address` is in huge pages (`/proc/self/smaps`).
fn huge_bytes_at(address: usize) -> usize {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let start = format!("{address:x}-");
    smaps
        .lines()
        .skip_while(|line| !line.starts_with(&start))
        .skip(1)
        // The entry's fields (`Name: value`), up to the next entry's range.
        .take_while(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|name| name.ends_with(':'))
        })
        .find_map(|line| line.strip_prefix("AnonHugePages:"))
        .and_then(|kib| {
            kib.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<usize>()
                .ok()
        })
        .map_or(0, |kib| kib << 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same bytes at the same addresses afterwards, whether the kernel gave huge pages
    /// (the binary then no longer backs the moved range) or not (it still does), and this
    /// process runs on: other tests' threads ran through the move.
    #[test]
    fn the_code_moved_is_the_same_code_at_the_same_addresses() {
        let inside: Vec<(usize, usize)> = code_mappings()
            .unwrap()
            .iter()
            .filter_map(CodeMapping::huge_inside)
            .collect();
        assert!(!inside.is_empty(), "a test binary has megabytes of code");
        // SAFETY: the ranges are mapped readable (the maps list them) and never written.
        let before: Vec<Vec<u8>> = inside
            .iter()
            .map(|&(from, to)| {
                unsafe { std::slice::from_raw_parts(from as *const u8, to - from) }.to_vec()
            })
            .collect();

        let moved = move_code_to_huge_pages();

        for (&(from, to), bytes) in inside.iter().zip(&before) {
            // SAFETY: as above: the same addresses are mapped readable, moved or not.
            let now = unsafe { std::slice::from_raw_parts(from as *const u8, to - from) };
            assert!(now == bytes.as_slice(), "the bytes at {from:#x} changed");
        }
        let still_the_binarys = code_mappings().unwrap().iter().any(|mapping| {
            inside
                .iter()
                .any(|&(from, to)| mapping.start < to && mapping.end > from)
        });
        match moved {
            Ok(bytes) => {
                assert_eq!(
                    bytes,
                    inside.iter().map(|(from, to)| to - from).sum::<usize>()
                );
                assert!(!still_the_binarys, "the moved ranges are anonymous now");
                assert!(huge_bytes_at(inside[0].0) >= inside[0].1 - inside[0].0);
            }
            Err(why) => {
                assert!(why.contains("huge pages"), "{why}");
                assert!(
                    still_the_binarys,
                    "what was not moved is still the binary's"
                );
            }
        }
    }
}
