//! What edge-test changes in a guest's module before compiling it: a few of its imports
//! are wrapped, so that its dynamic backends reach the test's mocks, its core-cache calls
//! can be listed, and the TLS facts the test sets reach it. One module a kind of wrapper
//! (`dynamic_backend`, `cache_calls`, `downstream`), over one way of writing their bodies
//! (`ir`).
//!
//! viceroy-lib 0.22 connects a dynamic backend (`Backend::builder(name, target)`) straight
//! to its target, and has no hook to redirect it. But the guest registers one through an
//! import, `fastly_http_req::register_dynamic_backend(name, target, options, config)`, and
//! an import can be wrapped. The module's import becomes a function of edge-test's (so every
//! call site, table entry and export reaches it unchanged) that:
//!
//! 1. reports the registration as the guest made it (name, target, option bits, the 108-byte
//!    `DynamicBackendConfig`, and its host override, certificate and SNI host names) as
//!    one hex-encoded entry of the log endpoint [`REPORT_ENDPOINT`], which the runner takes
//!    out of the guest's logs (`dynamic_backends`);
//! 2. registers the backend with viceroy under the guest's name and options, but with the
//!    target `127.0.0.2:<n>`, where `n` numbers the invocation's registrations from 1, and
//!    without TLS (the mock speaks plain HTTP; whether the guest asked for TLS is in the
//!    report);
//! 3. returns viceroy's answer.
//!
//! Its core-cache calls (`fastly_cache::lookup`, `insert`, and the transaction calls) are
//! wrapped the same way, the other way round: each calls through, then reports the call (its
//! key or handle, the handle it returned, the write options and surrogate keys) on
//! [`CACHE_ENDPOINT`], for `cache_ledger`.
//!
//! Its downstream TLS and fingerprint calls, which viceroy answers "absent", first ask a
//! hidden config store ([`DOWNSTREAM_STORE`]) for the fact the test set for the request.
//!
//! Nothing listens at `127.0.0.2`: the network fence catches the `connect` there and hands
//! the guest a socket connected to the test's dynamic-backend dispatcher instead
//! (`network_fence`). Scratch memory comes from the guest's own shadow stack (its
//! `__stack_pointer`), taken and given back within the call, as compiled code does: the
//! guest's allocator and data are never touched. Modules that import none of these calls
//! are compiled as they are; components are left alone (the fence refuses their dynamic
//! backends).

mod cache_calls;
mod downstream;
pub(crate) mod dwarf;
mod dynamic_backend;
mod http_cache;
mod ir;

use std::path::{Path, PathBuf};

use walrus::ir::Value;
use walrus::{ConstExpr, FunctionId, GlobalId, Module, ValType};

pub(crate) use cache_calls::CACHE_ENDPOINT;
use cache_calls::{CACHE_CALLS, CallReporter, Field};
use downstream::FactWrapper;
pub(crate) use downstream::{DOWNSTREAM_FACTS, DOWNSTREAM_STORE};
use dynamic_backend::DynamicWrapper;
pub(crate) use dynamic_backend::{REPORT_ENDPOINT, SLOT_IP};
use ir::{Ir, Shared};

/// The module viceroy should compile for a guest's, and where its DWARF is.
#[derive(Debug, PartialEq)]
pub(crate) struct ModuleToCompile {
    pub(crate) path: PathBuf,
    /// A file whose DWARF describes the compiled code (the guest's own module, when only its
    /// DWARF was left out), for a trap's file and line (`trap_lines`).
    pub(crate) dwarf: Option<DwarfFile>,
    /// The memory file `path` names, when the module could not be cached: open as long as
    /// this lives.
    held: Option<MemoryFile>,
}

/// A module in an anonymous memory file, for when there is no private directory to cache it
/// in (refused, or its disk full): viceroy compiles from a path, and `/proc/self/fd/<n>` is
/// one for as long as the file is open.
#[derive(Debug)]
struct MemoryFile(std::os::fd::OwnedFd);

impl MemoryFile {
    fn holding(module: &[u8]) -> Result<Self, String> {
        use rustix::fs::{MemfdFlags, memfd_create};
        let fd = memfd_create("edge-test module", MemfdFlags::CLOEXEC)
            .map_err(|e| format!("cannot make a memory file for it: {e}"))?;
        let mut file = std::fs::File::from(fd);
        std::io::Write::write_all(&mut file, module)
            .map_err(|e| format!("cannot write its memory file: {e}"))?;
        Ok(Self(file.into()))
    }

    fn path(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", self.0.as_raw_fd()))
    }
}

impl PartialEq for MemoryFile {
    fn eq(&self, other: &Self) -> bool {
        use std::os::fd::AsRawFd;
        self.0.as_raw_fd() == other.0.as_raw_fd()
    }
}

/// The module file a trap's lines are read from, as it was when it was compiled.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DwarfFile {
    pub(crate) path: PathBuf,
    content_hash: u64,
}

impl DwarfFile {
    /// The file at `path`, whose content is `bytes` now (`module_for` has the hash already).
    #[cfg(test)]
    pub(crate) fn new(path: &Path, bytes: &[u8]) -> Self {
        Self {
            path: path.to_owned(),
            content_hash: content_hash(bytes),
        }
    }

    /// The file's bytes, if they are still the ones compiled (a guest rebuilt meanwhile has
    /// other code, whose lines would be wrong).
    pub(crate) fn read(&self) -> Option<Vec<u8>> {
        let bytes = std::fs::read(&self.path).ok()?;
        (content_hash(&bytes) == self.content_hash).then_some(bytes)
    }
}

impl ModuleToCompile {
    /// `path`, with no DWARF to read a trap's lines from (the guest's module as it is, or a
    /// rewrite, whose code offsets are walrus's).
    pub(crate) fn without_lines(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            dwarf: None,
            held: None,
        }
    }
}

/// The module viceroy should compile for `wasm`: `wasm` itself, or a copy (cached by content
/// in `modules` in this user's private directory, `private_dir`) without its DWARF
/// (`dwarf`), rewritten when it imports a call edge-test wraps or (given `http_cache_shim`)
/// Fastly's HTTP cache calls. `Err` says why it could not be rewritten; the caller then
/// compiles it as it is.
pub(crate) fn module_for(
    wasm: &Path,
    http_cache_shim: Option<&Path>,
) -> Result<ModuleToCompile, String> {
    module_cached_in(wasm, http_cache_shim, crate::private_dir::private_dir)
}

/// [`module_for`], with the private directory the cache goes in given by `private`, which is
/// called only when there is something to cache. Private because a module found there is
/// compiled and run: in a directory others could write, anyone could plant the code a test
/// runs.
fn module_cached_in(
    wasm: &Path,
    http_cache_shim: Option<&Path>,
    private: impl FnOnce() -> Result<PathBuf, String>,
) -> Result<ModuleToCompile, String> {
    let bytes = std::fs::read(wasm).map_err(|e| format!("cannot read {}: {e}", wasm.display()))?;
    let bytes = if wasm.extension().is_some_and(|e| e == "wat") {
        wat::parse_bytes(&bytes)
            .map_err(|e| format!("{} does not parse: {e}", wasm.display()))?
            .into_owned()
    } else {
        bytes
    };
    let stripped = dwarf::without_dwarf(&bytes);
    // Searched without the DWARF, whose strings name calls the code may never import.
    let code = stripped.as_deref().unwrap_or(&bytes);
    let shim = match http_cache_shim {
        Some(path) if contains(code, http_cache::HTTP_CACHE_MODULE.as_bytes()) => {
            Some(std::fs::read(path).map_err(|e| {
                format!(
                    "cannot read edge-test's HTTP cache shim ({}): {e}",
                    path.display()
                )
            })?)
        }
        _ => None,
    };
    let wraps = imports_dynamic_backends(code) || shim.is_some();
    if !wraps && stripped.is_none() {
        return Ok(ModuleToCompile::without_lines(wasm));
    }
    if wraps && viceroy_lib::adapt::is_component(&bytes) {
        return Err("it is a component, which edge-test does not rewrite".to_owned());
    }
    // Without a private directory the module is still compiled, from memory, every time.
    let cache = private().and_then(|private| {
        let dir = private.join("modules");
        crate::private_dir::ensure_private(&dir).map(|()| dir)
    });
    let module_hash = content_hash(&bytes);
    let hash = module_hash ^ shim.as_deref().map_or(0, content_hash).rotate_left(1);
    let rewritten_name = format!("{hash:016x}-rewritten.wasm");
    // Only the DWARF left out: the code is the guest's own, and so are its offsets unless
    // a debug section came before it (no lines then: they would be another code's).
    let stripped_name = format!("{hash:016x}-stripped.wasm");
    let same_offsets = stripped
        .as_deref()
        .is_some_and(|s| dwarf::code_at(s).is_some_and(|at| Some(at) == dwarf::code_at(&bytes)));
    let stripped_only = |path: PathBuf, held: Option<MemoryFile>| ModuleToCompile {
        path,
        dwarf: same_offsets.then(|| DwarfFile {
            path: wasm.to_owned(),
            content_hash: module_hash,
        }),
        held,
    };
    if let Ok(dir) = &cache {
        if dir.join(&rewritten_name).is_file() {
            return Ok(ModuleToCompile::without_lines(&dir.join(&rewritten_name)));
        }
        if dir.join(&stripped_name).is_file() {
            return Ok(stripped_only(dir.join(&stripped_name), None));
        }
    }
    let rewritten = if wraps {
        // A panic here is a bug of edge-test's (walrus refuses IR the rewrite got wrong):
        // named, it fails the load rather than the thread compiling the template.
        std::panic::catch_unwind(|| rewrite(code, shim.as_deref())).unwrap_or_else(|panic| {
            Err(format!(
                "the module rewrite panicked, a bug in edge-test (please report it): {}",
                crate::mock::server::panic_message(&panic)
            ))
        })?
    } else {
        None
    };
    // The names were only in its bytes (a debug build's symbol names, say), not among its
    // imports: there is nothing to wrap, and only the DWARF to leave out.
    let (module, name, is_rewritten) = match (rewritten, stripped) {
        (Some(rewritten), _) => (rewritten, rewritten_name, true),
        (None, Some(stripped)) => (stripped, stripped_name, false),
        (None, None) => return Ok(ModuleToCompile::without_lines(wasm)),
    };
    let to_compile = |path: PathBuf, held| {
        if is_rewritten {
            ModuleToCompile {
                held,
                ..ModuleToCompile::without_lines(&path)
            }
        } else {
            stripped_only(path, held)
        }
    };
    let cached = cache.and_then(|dir| {
        let file = dir.join(&name);
        // Written whole, then renamed: a concurrent compile sees the old name or the whole
        // file.
        let partial = dir.join(format!(".{}-{name}.partial", std::process::id()));
        std::fs::write(&partial, &module)
            .and_then(|()| std::fs::rename(&partial, &file))
            .map_err(|e| {
                let _ = std::fs::remove_file(&partial);
                format!("cannot write {}: {e}", file.display())
            })?;
        Ok(file)
    });
    match cached {
        Ok(file) => Ok(to_compile(file, None)),
        Err(not_cached) => {
            let held = MemoryFile::holding(&module).map_err(|e| format!("{not_cached}; {e}"))?;
            Ok(to_compile(held.path(), Some(held)))
        }
    }
}

fn content_hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    // The rewrite itself is part of what the cached file is: this build of edge-test (a hash
    // of its sources) wrote it.
    env!("EDGE_TEST_BUILD_ID").hash(&mut hasher);
    hasher.finish()
}

/// Whether the module may import a call edge-test wraps: its module's or its name appears
/// in the bytes (a module without them is never parsed; `rewrite` checks the imports).
fn imports_dynamic_backends(bytes: &[u8]) -> bool {
    [
        &b"register_dynamic_backend"[..],
        b"fastly_cache",
        b"downstream_",
    ]
    .iter()
    .any(|name| contains(bytes, name))
}

/// Whether the module at `wasm` may import Fastly's HTTP cache calls.
pub(crate) fn imports_http_cache(wasm: &Path) -> bool {
    std::fs::read(wasm)
        .is_ok_and(|bytes| contains(&bytes, http_cache::HTTP_CACHE_MODULE.as_bytes()))
}

fn contains(bytes: &[u8], name: &[u8]) -> bool {
    bytes.windows(name.len()).any(|window| window == name)
}

/// Reads a report's field back: two hex digits a byte, as the wrappers write them.
pub(crate) fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The module with its `register_dynamic_backend` import wrapped (see the module's docs),
/// its core-cache writes and lookups reported, and (given `http_cache_shim`) its HTTP cache
/// calls answered by the shim; `None` when it imports none of these calls.
pub(crate) fn rewrite(
    bytes: &[u8],
    http_cache_shim: Option<&[u8]>,
) -> Result<Option<Vec<u8>>, String> {
    let mut module =
        Module::from_buffer(bytes).map_err(|e| format!("walrus cannot read the module: {e}"))?;
    let memory = module
        .exports
        .iter()
        .find_map(|e| match e.item {
            walrus::ExportItem::Memory(m) if e.name == "memory" => Some(m),
            _ => None,
        })
        .ok_or("the module exports no `memory`")?;
    let stack_pointer = stack_pointer(&module).ok_or("the module has no `__stack_pointer`")?;
    // First: the shim's own core-cache calls are then wrapped with the guest's.
    let http_cache_calls = match http_cache_shim {
        Some(shim) => http_cache::merge(&mut module, shim, memory, stack_pointer)?,
        None => 0,
    };
    let dynamic = module
        .imports
        .get_func("fastly_http_req", "register_dynamic_backend")
        .ok();
    let cache_calls: Vec<(FunctionId, &'static str, &'static [Field])> = CACHE_CALLS
        .iter()
        .filter_map(|(name, fields)| {
            let id = module.imports.get_func("fastly_cache", name).ok()?;
            Some((id, *name, *fields))
        })
        .collect();
    let facts: Vec<(FunctionId, &'static str, &'static str)> = DOWNSTREAM_FACTS
        .iter()
        .filter_map(|(name, key)| {
            let id = module
                .imports
                .get_func("fastly_http_downstream", name)
                .ok()?;
            Some((id, *name, *key))
        })
        .collect();
    if dynamic.is_none() && cache_calls.is_empty() && facts.is_empty() && http_cache_calls == 0 {
        return Ok(None);
    }
    let i32x3 = module.types.add(&[ValType::I32; 3], &[ValType::I32]);
    let i32x4 = module.types.add(&[ValType::I32; 4], &[ValType::I32]);
    let import =
        |module: &mut Module, from: &str, name: &str, ty| match module.imports.get_func(from, name)
        {
            Ok(id) => id,
            Err(_) => module.add_import_func(from, name, ty).0,
        };
    let shared = Shared {
        memory,
        stack_pointer,
        endpoint_get: import(&mut module, "fastly_log", "endpoint_get", i32x3),
        log_write: import(&mut module, "fastly_log", "write", i32x4),
    };
    if let Some(original) = dynamic {
        let ty = module.funcs.get(original).ty();
        let register = module
            .add_import_func("fastly_http_req", "register_dynamic_backend", ty)
            .0;
        let slot =
            module
                .globals
                .add_local(ValType::I32, true, false, ConstExpr::Value(Value::I32(0)));
        let ir = Ir::new(&mut module, shared);
        let mut local = || module.locals.add(ValType::I32);
        let wrapper = DynamicWrapper {
            ir,
            slot,
            register,
            k: local(),
            started: local(),
            ovr_len: local(),
            cert_len: local(),
            sni_len: local(),
        };
        module
            .replace_imported_func(original, |(body, args)| wrapper.emit(body, args))
            .map_err(|e| format!("cannot wrap register_dynamic_backend: {e}"))?;
    }
    for (original, name, fields) in cache_calls {
        let ty = module.funcs.get(original).ty();
        let real = module.add_import_func("fastly_cache", name, ty).0;
        let ir = Ir::new(&mut module, shared);
        let lens = fields
            .iter()
            .map(|_| module.locals.add(ValType::I32))
            .collect();
        let reporter = CallReporter {
            ir,
            real,
            endpoint: CACHE_ENDPOINT,
            op: name,
            fields,
            lens,
        };
        module
            .replace_imported_func(original, |(body, args)| reporter.emit(body, args))
            .map_err(|e| format!("cannot wrap fastly_cache::{name}: {e}"))?;
    }
    if !facts.is_empty() {
        let i32x6 = module.types.add(&[ValType::I32; 6], &[ValType::I32]);
        let open = import(&mut module, "fastly_config_store", "open", i32x3);
        let get = import(&mut module, "fastly_config_store", "get", i32x6);
        for (original, name, key) in facts {
            let ty = module.funcs.get(original).ty();
            let real = module.add_import_func("fastly_http_downstream", name, ty).0;
            let ir = Ir::new(&mut module, shared);
            let wrapper = FactWrapper {
                ir,
                open,
                get,
                real,
                key,
            };
            module
                .replace_imported_func(original, |(body, args)| wrapper.emit(body, args))
                .map_err(|e| format!("cannot wrap fastly_http_downstream::{name}: {e}"))?;
        }
    }
    Ok(Some(module.emit_wasm()))
}

/// LLVM's shadow stack pointer: named in the name section, or else the first mutable i32
/// global the module defines (where LLVM always puts it).
fn stack_pointer(module: &Module) -> Option<GlobalId> {
    let defined_mutable_i32 = |g: &&walrus::Global| {
        g.mutable && g.ty == ValType::I32 && matches!(g.kind, walrus::GlobalKind::Local(_))
    };
    module
        .globals
        .iter()
        .filter(defined_mutable_i32)
        .find(|g| g.name.as_deref() == Some("__stack_pointer"))
        .or_else(|| module.globals.iter().find(defined_mutable_i32))
        .map(walrus::Global::id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST: &str = r#"
        (module
          (import "fastly_http_req" "register_dynamic_backend"
            (func $register (param i32 i32 i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 2)
          (global $__stack_pointer (mut i32) (i32.const 65536))
          (table 1 funcref)
          (elem (i32.const 0) $register)
          (func (export "_start")
            (drop (call $register (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
              (i32.const 0) (i32.const 0)))))
    "#;

    fn imports(bytes: &[u8]) -> Vec<(String, String)> {
        let module = Module::from_buffer(bytes).unwrap();
        let mut imports: Vec<_> = module
            .imports
            .iter()
            .map(|i| (i.module.clone(), i.name.clone()))
            .collect();
        imports.sort();
        imports
    }

    #[test]
    fn the_import_is_wrapped_and_called_through() {
        let rewritten = rewrite(&wat::parse_str(GUEST).unwrap(), None)
            .unwrap()
            .expect("the guest imports register_dynamic_backend");
        assert_eq!(
            imports(&rewritten),
            [
                ("fastly_http_req".into(), "register_dynamic_backend".into()),
                ("fastly_log".into(), "endpoint_get".into()),
                ("fastly_log".into(), "write".into()),
            ],
            "the guest's import is now the wrapper, which imports the real one"
        );
        let module = Module::from_buffer(&rewritten).unwrap();
        let register = module
            .imports
            .get_func("fastly_http_req", "register_dynamic_backend")
            .unwrap();
        let table_entries: Vec<FunctionId> = module
            .elements
            .iter()
            .flat_map(|e| match &e.items {
                walrus::ElementItems::Functions(f) => f.clone(),
                walrus::ElementItems::Expressions(..) => Vec::new(),
            })
            .collect();
        assert_eq!(table_entries.len(), 1);
        assert_ne!(
            table_entries[0], register,
            "the table reaches the wrapper, not the import"
        );
    }

    #[test]
    fn a_module_without_a_shadow_stack_is_refused_with_the_reason() {
        let guest = GUEST.replace("(global $__stack_pointer (mut i32) (i32.const 65536))", "");
        let error = rewrite(&wat::parse_str(guest).unwrap(), None).unwrap_err();
        assert_eq!(error, "the module has no `__stack_pointer`");
    }

    #[test]
    fn a_module_without_dynamic_backends_is_compiled_as_it_is() {
        let dir = std::env::temp_dir().join(format!("edge-test-rewrite-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("plain.wat");
        std::fs::write(&plain, "(module (memory (export \"memory\") 1))").unwrap();
        let as_it_is = ModuleToCompile::without_lines;
        assert_eq!(module_for(&plain, None).unwrap(), as_it_is(&plain));
        // The names of calls edge-test wraps in its bytes (a debug build's symbol names),
        // none among its imports: nothing to rewrite, with the HTTP cache shim or without.
        let named = dir.join("named.wat");
        std::fs::write(
            &named,
            "(module (memory (export \"memory\") 1) (global $__stack_pointer (mut i32) \
             (i32.const 65536)) (data (i32.const 16) \"fastly_http_cache register_dynamic_backend\"))",
        )
        .unwrap();
        let shim = dir.join("shim.wasm");
        std::fs::write(&shim, b"never read as a module").unwrap();
        assert_eq!(module_for(&named, None).unwrap(), as_it_is(&named));
        assert_eq!(module_for(&named, Some(&shim)).unwrap(), as_it_is(&named));
        let guest = dir.join("guest.wat");
        std::fs::write(&guest, GUEST).unwrap();
        let rewritten = module_for(&guest, None).unwrap();
        assert_ne!(rewritten.path, guest);
        assert_eq!(rewritten.dwarf, None, "walrus wrote other code offsets");
        assert_eq!(
            module_for(&guest, None).unwrap(),
            rewritten,
            "cached by content"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_cache_lives_in_the_private_directory_and_without_one_modules_compile_from_memory() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("edge-test-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let mut bytes = wat::parse_str("(module (func (export \"f\")))").unwrap();
        bytes.extend_from_slice(b"\0\x0e\x0b.debug_info\x01\x02");
        let guest = base.join("debug.wasm");
        std::fs::write(&guest, &bytes).unwrap();
        let private = base.join("edge-test");
        let made_private = || {
            crate::private_dir::ensure_private(&private)?;
            Ok(private.clone())
        };
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;

        let compiled = module_cached_in(&guest, None, made_private).unwrap();
        assert_eq!(compiled.path.parent(), Some(&*private.join("modules")));
        assert_eq!(mode(&private), 0o700);
        assert_eq!(mode(&private.join("modules")), 0o700);
        let cached = std::fs::read(&compiled.path).unwrap();

        // A cache directory anyone may write: a module planted there would be run.
        std::fs::remove_dir_all(private.join("modules")).unwrap();
        std::fs::create_dir(private.join("modules")).unwrap();
        std::fs::set_permissions(private.join("modules"), PermissionsExt::from_mode(0o777))
            .unwrap();
        let from_memory = module_cached_in(&guest, None, made_private).unwrap();
        assert!(
            from_memory.path.starts_with("/proc/self/fd"),
            "{from_memory:?}"
        );
        assert_eq!(
            std::fs::read_dir(private.join("modules")).unwrap().count(),
            0,
            "nothing is written there"
        );
        // No private directory at all, or its disk full: compiled from memory too, its
        // bytes the ones the cache would have held.
        let none = module_cached_in(&guest, None, || Err("no private directory".to_owned()));
        let none = none.unwrap();
        assert_eq!(std::fs::read(&none.path).unwrap(), cached);
        assert_eq!(
            none.dwarf, compiled.dwarf,
            "its lines still read from the guest"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_module_with_dwarf_is_compiled_without_it_and_its_own_file_keeps_the_lines() {
        let dir = std::env::temp_dir().join(format!("edge-test-dwarf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut bytes = wat::parse_str("(module (func (export \"f\")))").unwrap();
        let debug_info = b"\x0b.debug_info\x01\x02\x03";
        bytes.extend_from_slice(&[0, debug_info.len() as u8]);
        bytes.extend_from_slice(debug_info);
        let guest = dir.join("debug.wasm");
        std::fs::write(&guest, &bytes).unwrap();
        let compiled = module_for(&guest, None).unwrap();
        let lines_from = compiled.dwarf.clone().expect("the lines are the file's");
        assert_eq!(lines_from.path, guest);
        assert_eq!(lines_from.read().as_deref(), Some(&bytes[..]));
        let without = std::fs::read(&compiled.path).unwrap();
        assert!(!contains(&without, b".debug_info"), "its DWARF is left out");
        assert_eq!(without, bytes[..bytes.len() - debug_info.len() - 2]);
        assert_eq!(
            module_for(&guest, None).unwrap(),
            compiled,
            "cached by content"
        );
        // DWARF before the code: leaving it out moves the code, and the file's lines would
        // be another code's.
        let mut first = bytes[..8].to_vec();
        first.extend_from_slice(&[0, debug_info.len() as u8]);
        first.extend_from_slice(debug_info);
        first.extend_from_slice(&bytes[8..bytes.len() - debug_info.len() - 2]);
        let early = dir.join("early.wasm");
        std::fs::write(&early, &first).unwrap();
        let compiled = module_for(&early, None).unwrap();
        assert_ne!(compiled.path, early, "its DWARF is left out too");
        assert_eq!(compiled.dwarf, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
