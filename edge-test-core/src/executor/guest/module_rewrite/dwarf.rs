//! A module's DWARF (its `.debug_*` custom sections), left out before compiling.
//!
//! wasmtime keeps a module's DWARF in its compiled code, read-only memory filled at compile
//! time, and the host forks every worker from that memory: each fork copies its page tables
//! and each worker's exit tears them down again. A debug build's test module is mostly DWARF
//! (16.8 of the 17.5 MB of the 200-test benchmark module), which made it most of a worker's
//! cost (BENCHMARKS.md). A trap's backtrace still names every frame (the `name` section
//! stays); its file and line come from the module on disk, which keeps its DWARF
//! (`trap_lines`).
//!
//! Only custom sections are dropped, and they follow the code in a module rustc or wasm-ld
//! wrote, so the code keeps its offsets: the DWARF on disk still describes the compiled code
//! (`module_for` checks, with [`code_at`]).

/// `bytes` without its `.debug_*` custom sections; `None` when it has none, or is not a core
/// module this can walk (a component, or malformed: compiled as it is, wasmtime says why).
pub(crate) fn without_dwarf(bytes: &[u8]) -> Option<Vec<u8>> {
    let sections = sections(bytes)?;
    let mut kept = CORE_MODULE.to_vec();
    let mut dropped = false;
    for section in sections {
        if section
            .custom
            .is_some_and(|(name, _)| name.starts_with(".debug_"))
        {
            dropped = true;
        } else {
            kept.extend_from_slice(section.whole);
        }
    }
    dropped.then_some(kept)
}

/// One section of a module, as it lies in its bytes.
pub(crate) struct Section<'a> {
    pub(crate) id: u8,
    /// Header and contents.
    pub(crate) whole: &'a [u8],
    /// Where its contents begin in the module.
    pub(crate) contents_at: usize,
    /// A custom section's name (when it is UTF-8) and body.
    pub(crate) custom: Option<(&'a str, &'a [u8])>,
}

const CODE: u8 = 10;
const CUSTOM: u8 = 0;
const CORE_MODULE: [u8; 8] = *b"\0asm\x01\0\0\0";

/// The sections of a core module, in order; `None` for a component or malformed bytes.
pub(crate) fn sections(bytes: &[u8]) -> Option<Vec<Section<'_>>> {
    if bytes.get(..8)? != CORE_MODULE {
        return None;
    }
    let mut sections = Vec::new();
    let mut at = 8;
    while at < bytes.len() {
        let id = bytes[at];
        let (size, contents_at) = leb128_u32(bytes, at + 1)?;
        let end = contents_at.checked_add(size as usize)?;
        let whole = bytes.get(at..end)?;
        let custom = if id == CUSTOM {
            let contents = &bytes[contents_at..end];
            let (len, name_at) = leb128_u32(contents, 0)?;
            let name_end = name_at.checked_add(len as usize)?;
            let name = contents.get(name_at..name_end)?;
            std::str::from_utf8(name)
                .ok()
                .map(|name| (name, &contents[name_end..]))
        } else {
            None
        };
        sections.push(Section {
            id,
            whole,
            contents_at,
            custom,
        });
        at = end;
    }
    Some(sections)
}

/// Where the code section's contents begin: DWARF addresses in wasm count from there.
pub(crate) fn code_at(bytes: &[u8]) -> Option<usize> {
    sections(bytes)?
        .into_iter()
        .find(|section| section.id == CODE)
        .map(|section| section.contents_at)
}

/// The unsigned LEB128 number at `bytes[at..]` and the offset just past it.
fn leb128_u32(bytes: &[u8], mut at: usize) -> Option<(u32, usize)> {
    let mut value: u64 = 0;
    for shift in (0..35).step_by(7) {
        let byte = *bytes.get(at)?;
        at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return u32::try_from(value).ok().map(|v| (v, at));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn custom(name: &str, body: &[u8]) -> Vec<u8> {
        let mut payload = vec![name.len() as u8];
        payload.extend_from_slice(name.as_bytes());
        payload.extend_from_slice(body);
        let mut section = vec![CUSTOM, payload.len() as u8];
        section.extend(payload);
        section
    }

    fn module_with(sections: &[Vec<u8>]) -> Vec<u8> {
        let mut module =
            wat::parse_str(r#"(module (func (export "f") (result i32) i32.const 7))"#).unwrap();
        for section in sections {
            module.extend_from_slice(section);
        }
        module
    }

    #[test]
    fn debug_sections_go_and_the_rest_stays_in_order() {
        let names = custom("name", b"\x00\x02\x01f");
        let module = module_with(&[
            custom(".debug_info", &[1; 100]),
            names.clone(),
            custom(".debug_line", &[2; 3]),
            custom("producers", b"x"),
        ]);
        let stripped = without_dwarf(&module).expect("it has DWARF");
        assert_eq!(
            stripped,
            module_with(&[names, custom("producers", b"x")]),
            "only the .debug_ sections are gone"
        );
        assert_still_valid(&stripped);
    }

    /// The stripped module still reads as a valid module with its function and export.
    fn assert_still_valid(module: &[u8]) {
        let module = walrus::Module::from_buffer(module).expect("a valid module");
        assert!(module.exports.iter().any(|e| e.name == "f"));
        assert_eq!(module.funcs.iter().count(), 1);
    }

    #[test]
    fn a_debug_section_before_the_code_moves_it() {
        let module = module_with(&[]);
        let at = code_at(&module).expect("it has code");
        let debug = custom(".debug_info", &[1; 10]);
        let mut before = module[..8].to_vec();
        before.extend_from_slice(&debug);
        before.extend_from_slice(&module[8..]);
        assert_eq!(code_at(&before), Some(at + debug.len()));
        assert_eq!(code_at(&without_dwarf(&before).unwrap()), Some(at));
    }

    #[test]
    fn a_module_without_dwarf_is_left_alone() {
        assert_eq!(without_dwarf(&module_with(&[custom("name", b"")])), None);
    }

    #[test]
    fn what_is_not_a_whole_core_module_is_left_alone() {
        let mut cut = module_with(&[custom(".debug_info", &[1; 100])]);
        cut.truncate(cut.len() - 10);
        assert_eq!(without_dwarf(&cut), None, "a section running past the end");
        assert_eq!(without_dwarf(b"\0asm\x0d\0\x01\0"), None, "a component");
        assert_eq!(without_dwarf(b"not wasm"), None);
        let mut oversized = module_with(&[]);
        oversized.extend_from_slice(&[CUSTOM, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(without_dwarf(&oversized), None, "a size past u32");
    }
}
