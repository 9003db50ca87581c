//! File and line for each frame of a trap's backtrace, from the module on disk.
//!
//! The compiled module has no DWARF (`module_rewrite::dwarf` leaves it out: every fork would
//! copy it), so wasmtime's backtrace names functions only. When the compiled code is the
//! module's own, unchanged (only its custom sections went), the module file's DWARF describes
//! it still, and a trap (rare, and a failure someone reads) is worth reading it for: each
//! frame gets the `at file:line:col` lines wasmtime would have written. A module edge-test
//! rewrote has other code offsets, and its frames stay as wasmtime wrote them.

use std::collections::HashMap;

use gimli::{EndianSlice, LittleEndian};

use super::module_rewrite::{DwarfFile, dwarf};

/// `message` (a trap, with wasmtime's backtrace) with each frame's source lines from the
/// DWARF of `module`; as it is when the module cannot be read, is no longer the one compiled,
/// or has no DWARF for a frame.
pub(crate) fn with_source_lines(message: &str, module: &DwarfFile) -> String {
    if !message.contains("wasm backtrace:") {
        return message.to_owned();
    }
    let Some(bytes) = module.read() else {
        return message.to_owned();
    };
    let Some(debug) = DebugSections::of(&bytes) else {
        return message.to_owned();
    };
    let Ok(lines) = debug.context() else {
        return message.to_owned();
    };
    let mut out = String::with_capacity(message.len() * 2);
    for line in message.lines() {
        out.push_str(line);
        out.push('\n');
        let Some(offset) = frame_offset(line) else {
            continue;
        };
        let Some(probe) = offset.checked_sub(debug.code_start) else {
            continue;
        };
        let Ok(mut frames) = lines.find_frames(probe).skip_all_loads() else {
            continue;
        };
        while let Ok(Some(frame)) = frames.next() {
            let Some(location) = frame.location else {
                continue;
            };
            let Some(file) = location.file else { continue };
            out.push_str("                    at ");
            out.push_str(file);
            for number in [location.line, location.column]
                .into_iter()
                .map_while(|n| n)
            {
                out.push_str(&format!(":{number}"));
            }
            out.push('\n');
        }
    }
    if !message.ends_with('\n') {
        out.pop();
    }
    out
}

/// The module offset of a backtrace line wasmtime wrote: `  3: 0x17ba69 - name`.
fn frame_offset(line: &str) -> Option<u64> {
    let (index, rest) = line.trim_start().split_once(':')?;
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (hex, _) = rest.trim_start().strip_prefix("0x")?.split_once(" - ")?;
    u64::from_str_radix(hex, 16).ok()
}

/// A module's `.debug_*` sections and where its code section's contents begin (DWARF
/// addresses in wasm count from there).
struct DebugSections<'a> {
    sections: HashMap<&'a str, &'a [u8]>,
    code_start: u64,
}

impl<'a> DebugSections<'a> {
    fn of(bytes: &'a [u8]) -> Option<Self> {
        let sections: HashMap<&str, &[u8]> = dwarf::sections(bytes)?
            .into_iter()
            .filter_map(|section| section.custom)
            .filter(|(name, _)| name.starts_with(".debug_"))
            .collect();
        (!sections.is_empty()).then_some(Self {
            sections,
            code_start: dwarf::code_at(bytes)? as u64,
        })
    }

    fn context(&self) -> Result<addr2line::Context<EndianSlice<'a, LittleEndian>>, gimli::Error> {
        let dwarf = gimli::Dwarf::load(|id| {
            let data: &'a [u8] = self.sections.get(id.name()).copied().unwrap_or(&[]);
            Ok::<_, gimli::Error>(EndianSlice::new(data, LittleEndian))
        })?;
        addr2line::Context::from_dwarf(dwarf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lines_are_told_from_the_rest() {
        assert_eq!(
            frame_offset("    0:  0x177f7 - core::arch::unreachable"),
            Some(0x177f7)
        );
        assert_eq!(
            frame_offset("   12: 0x1746ef - guest.wasm!std::rt::lang_start"),
            Some(0x1746ef)
        );
        assert_eq!(frame_offset("wasm backtrace:"), None);
        assert_eq!(frame_offset("Caused by:"), None);
        assert_eq!(
            frame_offset("    wasm trap: wasm `unreachable` instruction executed"),
            None
        );
    }

    #[test]
    fn a_module_without_dwarf_or_not_the_one_compiled_leaves_the_message_as_it_is() {
        let dir = crate::private_dir::private_dir().unwrap();
        let path = dir.join(format!("trap-lines-{}.wasm", std::process::id()));
        let bytes = wat::parse_str("(module (func))").unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let module = DwarfFile::new(&path, &bytes);
        let message =
            "error while executing at wasm backtrace:\n    0:   0x1a - <unknown>!<wasm function 0>";
        assert_eq!(with_source_lines(message, &module), message);
        assert_eq!(module.read().as_deref(), Some(&bytes[..]));
        // Rebuilt since it was compiled: its lines would be another code's.
        std::fs::write(&path, wat::parse_str("(module (func) (func))").unwrap()).unwrap();
        assert_eq!(module.read(), None);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(module.read(), None, "gone");
        assert_eq!(with_source_lines(message, &module), message);
    }
}
