//! The one change edge-test makes to a guest's module before compiling it: its dynamic
//! backends are pointed at the test's mocks.
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
//! Nothing listens at `127.0.0.2`: the network fence catches the `connect` there and hands
//! the guest a socket connected to the test's dynamic-backend dispatcher instead
//! (`network_fence`). Scratch memory comes from the guest's own shadow stack (its
//! `__stack_pointer`), taken and given back within the call, as compiled code does: the
//! guest's allocator and data are never touched. Modules that do not import the function
//! are compiled as they are; components are left alone (the fence refuses their dynamic
//! backends).

use std::path::{Path, PathBuf};

use walrus::ir::{BinaryOp, ExtendedLoad, LoadKind, MemArg, StoreKind, Value};
use walrus::{ConstExpr, FunctionId, GlobalId, LocalId, MemoryId, Module, ValType};

/// The log endpoint registrations are reported on.
pub(crate) const REPORT_ENDPOINT: &str = "edge-test:dynamic-backend";
/// The address every redirected dynamic backend connects to; the port numbers it.
pub(crate) const SLOT_IP: [u8; 4] = [127, 0, 0, 2];

/// `BackendConfigOptions` bits (fastly-sys) the wrapper reads or clears.
const HOST_OVERRIDE: i32 = 1 << 1;
const CERT_HOSTNAME: i32 = 1 << 8;
const SNI_HOSTNAME: i32 = 1 << 11;
/// Everything about TLS: the mock is reached over plain HTTP.
const TLS_OPTIONS: i32 = (1 << 5)
    | (1 << 6)
    | (1 << 7)
    | CERT_HOSTNAME
    | (1 << 9)
    | (1 << 10)
    | SNI_HOSTNAME
    | (1 << 13);
/// Where `DynamicBackendConfig` (wasm32) keeps the strings the report includes.
const CONFIG_LEN: i32 = 108;
const HOST_OVERRIDE_AT: u64 = 0;
const CERT_HOSTNAME_AT: u64 = 28;
const SNI_HOSTNAME_AT: u64 = 52;

/// The module viceroy should compile for `wasm`: `wasm` itself, or a rewritten copy (cached
/// under the system's temporary directory by content) when it registers dynamic backends.
/// `Err` says why it could not be rewritten; the caller then compiles it as it is.
pub(crate) fn module_for(wasm: &Path) -> Result<PathBuf, String> {
    let bytes = std::fs::read(wasm).map_err(|e| format!("cannot read {}: {e}", wasm.display()))?;
    if !imports_dynamic_backends(&bytes) {
        return Ok(wasm.to_owned());
    }
    let bytes = if wasm.extension().is_some_and(|e| e == "wat") {
        wat::parse_bytes(&bytes)
            .map_err(|e| format!("{} does not parse: {e}", wasm.display()))?
            .into_owned()
    } else {
        bytes
    };
    if viceroy_lib::adapt::is_component(&bytes) {
        return Err("it is a component, which edge-test does not rewrite".to_owned());
    }
    let dir =
        std::env::temp_dir().join(format!("edge-test-{}", rustix::process::getuid().as_raw()));
    let cached = dir.join(format!(
        "{:016x}-dynamic-backends.wasm",
        content_hash(&bytes)
    ));
    if cached.is_file() {
        return Ok(cached);
    }
    let rewritten = rewrite(&bytes)?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // Written whole, then renamed: a concurrent compile sees the old name or the whole file.
    let partial = dir.join(format!(
        ".{}-{}.partial",
        std::process::id(),
        content_hash(&bytes)
    ));
    std::fs::write(&partial, rewritten)
        .and_then(|()| std::fs::rename(&partial, &cached))
        .map_err(|e| format!("cannot write {}: {e}", cached.display()))?;
    Ok(cached)
}

fn content_hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    // The rewrite itself is part of what the cached file is.
    REWRITE_VERSION.hash(&mut hasher);
    hasher.finish()
}

/// Bumped whenever `rewrite` changes what it writes.
const REWRITE_VERSION: u32 = 1;

/// Whether the module may import `fastly_http_req::register_dynamic_backend`: its name
/// appears in the bytes (a module without it is never parsed; `rewrite` checks the import
/// itself).
fn imports_dynamic_backends(bytes: &[u8]) -> bool {
    const NAME: &[u8] = b"register_dynamic_backend";
    bytes.windows(NAME.len()).any(|window| window == NAME)
}

/// The module with its `register_dynamic_backend` import wrapped (see the module's docs).
pub(crate) fn rewrite(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut module =
        Module::from_buffer(bytes).map_err(|e| format!("walrus cannot read the module: {e}"))?;
    let original = module
        .imports
        .get_func("fastly_http_req", "register_dynamic_backend")
        .map_err(|_| "the module does not import register_dynamic_backend".to_owned())?;
    let memory = module
        .exports
        .iter()
        .find_map(|e| match e.item {
            walrus::ExportItem::Memory(m) if e.name == "memory" => Some(m),
            _ => None,
        })
        .ok_or("the module exports no `memory`")?;
    let stack_pointer = stack_pointer(&module).ok_or("the module has no `__stack_pointer`")?;
    let ty = module.funcs.get(original).ty();
    let i32x3 = module.types.add(&[ValType::I32; 3], &[ValType::I32]);
    let i32x4 = module.types.add(&[ValType::I32; 4], &[ValType::I32]);
    let import =
        |module: &mut Module, from: &str, name: &str, ty| match module.imports.get_func(from, name)
        {
            Ok(id) => id,
            Err(_) => module.add_import_func(from, name, ty).0,
        };
    let endpoint_get = import(&mut module, "fastly_log", "endpoint_get", i32x3);
    let log_write = import(&mut module, "fastly_log", "write", i32x4);
    let register = module
        .add_import_func("fastly_http_req", "register_dynamic_backend", ty)
        .0;
    let slot = module
        .globals
        .add_local(ValType::I32, true, false, ConstExpr::Value(Value::I32(0)));
    let mut local = || module.locals.add(ValType::I32);
    let scratch = Scratch {
        memory,
        stack_pointer,
        slot,
        endpoint_get,
        log_write,
        register,
        sp: local(),
        buf: local(),
        pos: local(),
        k: local(),
        status: local(),
        i: local(),
        v: local(),
        n: local(),
        d: local(),
        started: local(),
        start: local(),
        ovr_len: local(),
        cert_len: local(),
        sni_len: local(),
    };
    module
        .replace_imported_func(original, |(body, args)| scratch.emit(body, args))
        .map_err(|e| format!("cannot wrap register_dynamic_backend: {e}"))?;
    Ok(module.emit_wasm())
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

/// What the wrapper's body refers to.
struct Scratch {
    memory: MemoryId,
    stack_pointer: GlobalId,
    slot: GlobalId,
    endpoint_get: FunctionId,
    log_write: FunctionId,
    register: FunctionId,
    sp: LocalId,
    buf: LocalId,
    pos: LocalId,
    k: LocalId,
    status: LocalId,
    i: LocalId,
    v: LocalId,
    n: LocalId,
    d: LocalId,
    started: LocalId,
    start: LocalId,
    ovr_len: LocalId,
    cert_len: LocalId,
    sni_len: LocalId,
}

type Body<'a, 'b> = &'a mut walrus::InstrSeqBuilder<'b>;

impl Scratch {
    fn emit(&self, b: Body, args: &[LocalId]) {
        let [name, name_len, target, target_len, mask, config] = args else {
            unreachable!("register_dynamic_backend takes six arguments")
        };
        let (name, name_len, target, target_len, mask, config) =
            (*name, *name_len, *target, *target_len, *mask, *config);

        // k = slot++
        b.global_get(self.slot).local_tee(self.k);
        b.i32_const(1).binop(BinaryOp::I32Add).global_set(self.slot);
        // The lengths of the strings the config holds, where the options say they are set.
        for (len, bit, at) in [
            (self.ovr_len, HOST_OVERRIDE, HOST_OVERRIDE_AT),
            (self.cert_len, CERT_HOSTNAME, CERT_HOSTNAME_AT),
            (self.sni_len, SNI_HOSTNAME, SNI_HOSTNAME_AT),
        ] {
            b.local_get(config);
            self.load_i32(b, at + 4);
            b.i32_const(0)
                .local_get(mask)
                .i32_const(bit)
                .binop(BinaryOp::I32And)
                .select(None)
                .local_set(len);
        }
        // Scratch on the shadow stack: 128 bytes of fixed fields, then the report (two hex
        // digits a byte, and separators), then the redirected target (at most 16 bytes).
        b.global_get(self.stack_pointer).local_tee(self.sp);
        b.i32_const(128 + 2 * (4 + 4 + CONFIG_LEN) + 16 + 16);
        for len in [
            name_len,
            target_len,
            self.ovr_len,
            self.cert_len,
            self.sni_len,
        ] {
            b.local_get(len)
                .i32_const(2)
                .binop(BinaryOp::I32Mul)
                .binop(BinaryOp::I32Add);
        }
        b.binop(BinaryOp::I32Sub)
            .i32_const(-16)
            .binop(BinaryOp::I32And)
            .local_tee(self.buf)
            .global_set(self.stack_pointer);

        // The report: endpoint name at buf, handle at buf+100, numbers at buf+104, text
        // from buf+128.
        self.store_bytes(b, self.buf, 0, REPORT_ENDPOINT.as_bytes());
        b.local_get(self.buf)
            .i32_const(REPORT_ENDPOINT.len() as i32)
            .local_get(self.buf)
            .i32_const(100)
            .binop(BinaryOp::I32Add)
            .call(self.endpoint_get)
            .local_set(self.status);
        b.local_get(self.buf)
            .i32_const(128)
            .binop(BinaryOp::I32Add)
            .local_set(self.pos);
        self.hex_of_i32(b, self.k);
        self.separator(b);
        self.hex(b, name, name_len);
        self.separator(b);
        self.hex(b, target, target_len);
        self.separator(b);
        self.hex_of_i32(b, mask);
        self.separator(b);
        b.i32_const(CONFIG_LEN).local_set(self.n);
        self.hex(b, config, self.n);
        for (len, at) in [
            (self.ovr_len, HOST_OVERRIDE_AT),
            (self.cert_len, CERT_HOSTNAME_AT),
            (self.sni_len, SNI_HOSTNAME_AT),
        ] {
            self.separator(b);
            // The string's pointer, read from the config, into `start`.
            b.local_get(config);
            self.load_i32(b, at);
            b.local_set(self.start);
            self.hex(b, self.start, len);
        }
        // Logged only when the endpoint opened (it always does under viceroy).
        b.local_get(self.status).unop(walrus::ir::UnaryOp::I32Eqz);
        b.if_else(
            None,
            |then| {
                then.local_get(self.buf);
                self.load_i32(then, 100);
                then.local_get(self.buf)
                    .i32_const(128)
                    .binop(BinaryOp::I32Add)
                    .local_get(self.pos)
                    .local_get(self.buf)
                    .i32_const(128)
                    .binop(BinaryOp::I32Add)
                    .binop(BinaryOp::I32Sub)
                    .local_get(self.buf)
                    .i32_const(104)
                    .binop(BinaryOp::I32Add)
                    .call(self.log_write)
                    .drop();
            },
            |_| {},
        );

        // The redirected target, "127.0.0.2:<k + 1>", after the report.
        b.local_get(self.pos).local_set(self.start);
        let ip = format!(
            "{}.{}.{}.{}:",
            SLOT_IP[0], SLOT_IP[1], SLOT_IP[2], SLOT_IP[3]
        );
        self.store_bytes(b, self.pos, 0, ip.as_bytes());
        b.local_get(self.pos)
            .i32_const(ip.len() as i32)
            .binop(BinaryOp::I32Add)
            .local_set(self.pos);
        b.local_get(self.k)
            .i32_const(1)
            .binop(BinaryOp::I32Add)
            .local_set(self.n);
        self.decimal(b);

        b.local_get(name)
            .local_get(name_len)
            .local_get(self.start)
            .local_get(self.pos)
            .local_get(self.start)
            .binop(BinaryOp::I32Sub)
            .local_get(mask)
            .i32_const(!TLS_OPTIONS)
            .binop(BinaryOp::I32And)
            .local_get(config)
            .call(self.register)
            .local_set(self.status);
        b.local_get(self.sp).global_set(self.stack_pointer);
        b.local_get(self.status);
    }

    fn arg(offset: u64) -> MemArg {
        MemArg { align: 1, offset }
    }

    fn load_i32(&self, b: Body, offset: u64) {
        b.load(
            self.memory,
            LoadKind::I32 { atomic: false },
            Self::arg(offset),
        );
    }

    /// Stores `bytes` at `base + offset`, one byte at a time (they are short constants).
    fn store_bytes(&self, b: Body, base: LocalId, offset: u64, bytes: &[u8]) {
        for (i, byte) in bytes.iter().enumerate() {
            b.local_get(base).i32_const(i32::from(*byte)).store(
                self.memory,
                StoreKind::I32_8 { atomic: false },
                Self::arg(offset + i as u64),
            );
        }
    }

    fn separator(&self, b: Body) {
        self.store_bytes(b, self.pos, 0, b" ");
        self.advance(b, 1);
    }

    fn advance(&self, b: Body, by: i32) {
        b.local_get(self.pos)
            .i32_const(by)
            .binop(BinaryOp::I32Add)
            .local_set(self.pos);
    }

    /// The four bytes of `value` (little-endian), in hex.
    fn hex_of_i32(&self, b: Body, value: LocalId) {
        b.local_get(self.buf).local_get(value).store(
            self.memory,
            StoreKind::I32 { atomic: false },
            Self::arg(104),
        );
        b.local_get(self.buf)
            .i32_const(104)
            .binop(BinaryOp::I32Add)
            .local_set(self.start);
        b.i32_const(4).local_set(self.n);
        self.hex(b, self.start, self.n);
    }

    /// `len` bytes from `ptr`, two hex digits each, written at `pos` (which moves on).
    fn hex(&self, b: Body, ptr: LocalId, len: LocalId) {
        b.i32_const(0).local_set(self.i);
        b.block(None, |done| {
            let done_id = done.id();
            done.loop_(None, |each| {
                let again = each.id();
                each.local_get(self.i)
                    .local_get(len)
                    .binop(BinaryOp::I32GeU)
                    .br_if(done_id);
                each.local_get(ptr)
                    .local_get(self.i)
                    .binop(BinaryOp::I32Add)
                    .load(
                        self.memory,
                        LoadKind::I32_8 {
                            kind: ExtendedLoad::ZeroExtend,
                        },
                        Self::arg(0),
                    )
                    .local_set(self.v);
                for (shift, at) in [(4, 0), (0, 1)] {
                    each.local_get(self.pos);
                    each.local_get(self.v)
                        .i32_const(shift)
                        .binop(BinaryOp::I32ShrU)
                        .i32_const(15)
                        .binop(BinaryOp::I32And)
                        .local_tee(self.d);
                    // A digit: '0' + d below ten, 'a' + d - 10 from it.
                    each.i32_const(48)
                        .i32_const(87)
                        .local_get(self.d)
                        .i32_const(10)
                        .binop(BinaryOp::I32LtU)
                        .select(None)
                        .binop(BinaryOp::I32Add)
                        .store(
                            self.memory,
                            StoreKind::I32_8 { atomic: false },
                            Self::arg(at),
                        );
                }
                self.advance(each, 2);
                each.local_get(self.i)
                    .i32_const(1)
                    .binop(BinaryOp::I32Add)
                    .local_set(self.i);
                each.br(again);
            });
        });
    }

    /// `n` (below 100,000) in decimal, without leading zeros, written at `pos`.
    fn decimal(&self, b: Body) {
        b.i32_const(10_000).local_set(self.d);
        b.i32_const(0).local_set(self.started);
        b.loop_(None, |each| {
            let again = each.id();
            // v = n / d % 10
            each.local_get(self.n)
                .local_get(self.d)
                .binop(BinaryOp::I32DivU)
                .i32_const(10)
                .binop(BinaryOp::I32RemU)
                .local_set(self.v);
            each.local_get(self.started)
                .local_get(self.v)
                .binop(BinaryOp::I32Or)
                .local_get(self.d)
                .i32_const(1)
                .binop(BinaryOp::I32Eq)
                .binop(BinaryOp::I32Or);
            each.if_else(
                None,
                |then| {
                    then.local_get(self.pos)
                        .local_get(self.v)
                        .i32_const(48)
                        .binop(BinaryOp::I32Add)
                        .store(
                            self.memory,
                            StoreKind::I32_8 { atomic: false },
                            Self::arg(0),
                        );
                    self.advance(then, 1);
                    then.i32_const(1).local_set(self.started);
                },
                |_| {},
            );
            each.local_get(self.d)
                .i32_const(10)
                .binop(BinaryOp::I32DivU)
                .local_tee(self.d)
                .br_if(again);
        });
    }
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
        let rewritten = rewrite(&wat::parse_str(GUEST).unwrap()).unwrap();
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
        let error = rewrite(&wat::parse_str(guest).unwrap()).unwrap_err();
        assert_eq!(error, "the module has no `__stack_pointer`");
    }

    #[test]
    fn a_module_without_dynamic_backends_is_compiled_as_it_is() {
        let dir = std::env::temp_dir().join(format!("edge-test-rewrite-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("plain.wat");
        std::fs::write(&plain, "(module (memory (export \"memory\") 1))").unwrap();
        assert_eq!(module_for(&plain).unwrap(), plain);
        let guest = dir.join("guest.wat");
        std::fs::write(&guest, GUEST).unwrap();
        let rewritten = module_for(&guest).unwrap();
        assert_ne!(rewritten, guest);
        assert_eq!(module_for(&guest).unwrap(), rewritten, "cached by content");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
