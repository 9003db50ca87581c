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
//! Its core-cache calls (`fastly_cache::lookup`, `insert`, and the transaction calls) are
//! wrapped the same way, the other way round: each calls through, then reports the call (its
//! key or handle, the handle it returned, the write options and surrogate keys) on
//! [`CACHE_ENDPOINT`], for `cache_ledger`.
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
const REWRITE_VERSION: u32 = 3;

/// Whether the module may import a call edge-test wraps: its module's or its name appears
/// in the bytes (a module without them is never parsed; `rewrite` checks the imports).
fn imports_dynamic_backends(bytes: &[u8]) -> bool {
    [
        &b"register_dynamic_backend"[..],
        b"fastly_cache",
        b"downstream_",
    ]
    .iter()
    .any(|name| bytes.windows(name.len()).any(|window| window == *name))
}

/// The core-cache calls whose keys and surrogate keys the runner needs to list what the
/// guest stored (`cache_ledger`), reported on [`CACHE_ENDPOINT`] after each call.
const CACHE_CALLS: &[(&str, &[Field])] = {
    use Field::*;
    // `CacheWriteOptions` (wasm32): surrogate keys at 40; `SURROGATE_KEYS` is bit 5.
    const WRITE: [Field; 3] = [
        Arg(1),
        Struct { ptr: 2, size: 80 },
        StructBytes {
            ptr: 2,
            at: 40,
            mask: 1,
            bit: 1 << 5,
        },
    ];
    &[
        ("lookup", &[Bytes { ptr: 0, len: 1 }, Out(4)]),
        (
            "insert",
            &[
                Bytes { ptr: 0, len: 1 },
                Arg(2),
                Struct { ptr: 3, size: 80 },
                StructBytes {
                    ptr: 3,
                    at: 40,
                    mask: 2,
                    bit: 1 << 5,
                },
            ],
        ),
        ("transaction_lookup", &[Bytes { ptr: 0, len: 1 }, Out(4)]),
        (
            "transaction_lookup_async",
            &[Bytes { ptr: 0, len: 1 }, Out(4)],
        ),
        ("cache_busy_handle_wait", &[Arg(0), Out(1)]),
        (
            "transaction_insert",
            &[Arg(0), WRITE[0], WRITE[1], WRITE[2]],
        ),
        (
            "transaction_insert_and_stream_back",
            &[Arg(0), WRITE[0], WRITE[1], WRITE[2], Out(4)],
        ),
        (
            "transaction_update",
            &[Arg(0), WRITE[0], WRITE[1], WRITE[2]],
        ),
    ]
};

/// The hidden config store the downstream facts viceroy leaves absent (TLS, fingerprints)
/// are served from, per request (`Tls` in the public API).
pub(crate) const DOWNSTREAM_STORE: &str = "edge-test-downstream";

/// Each downstream fact: the `fastly_http_downstream` import that asks for it (handle,
/// buffer, its length, bytes written), and its key in [`DOWNSTREAM_STORE`].
pub(crate) const DOWNSTREAM_FACTS: &[(&str, &str)] = &[
    ("downstream_tls_protocol", "tls_protocol"),
    ("downstream_tls_client_hello", "tls_client_hello"),
    ("downstream_tls_cipher_openssl_name", "tls_cipher"),
    ("downstream_tls_client_servername", "tls_server_name"),
    ("downstream_tls_ja4", "tls_ja4"),
    ("downstream_client_h2_fingerprint", "h2_fingerprint"),
    ("downstream_client_oh_fingerprint", "oh_fingerprint"),
];

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

/// The log endpoint core-cache calls are reported on.
pub(crate) const CACHE_ENDPOINT: &str = "edge-test:cache-call";

/// The module with its `register_dynamic_backend` import wrapped (see the module's docs)
/// and its core-cache writes and lookups reported.
pub(crate) fn rewrite(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut module =
        Module::from_buffer(bytes).map_err(|e| format!("walrus cannot read the module: {e}"))?;
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
    if dynamic.is_none() && cache_calls.is_empty() && facts.is_empty() {
        return Err("the module imports none of the calls edge-test wraps".to_owned());
    }
    let memory = module
        .exports
        .iter()
        .find_map(|e| match e.item {
            walrus::ExportItem::Memory(m) if e.name == "memory" => Some(m),
            _ => None,
        })
        .ok_or("the module exports no `memory`")?;
    let stack_pointer = stack_pointer(&module).ok_or("the module has no `__stack_pointer`")?;
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

/// The module-wide things a wrapper's body uses, and the locals of one wrapper.
struct Ir {
    memory: MemoryId,
    stack_pointer: GlobalId,
    endpoint_get: FunctionId,
    log_write: FunctionId,
    sp: LocalId,
    buf: LocalId,
    pos: LocalId,
    status: LocalId,
    /// What `endpoint_get` returned.
    opened: LocalId,
    i: LocalId,
    byte: LocalId,
    digit: LocalId,
    v: LocalId,
    n: LocalId,
    d: LocalId,
    start: LocalId,
}

/// What `rewrite` found in the module that every wrapper needs.
#[derive(Clone, Copy)]
struct Shared {
    memory: MemoryId,
    stack_pointer: GlobalId,
    endpoint_get: FunctionId,
    log_write: FunctionId,
}

impl Ir {
    fn new(module: &mut Module, shared: Shared) -> Self {
        let mut local = || module.locals.add(ValType::I32);
        Self {
            memory: shared.memory,
            stack_pointer: shared.stack_pointer,
            endpoint_get: shared.endpoint_get,
            log_write: shared.log_write,
            sp: local(),
            buf: local(),
            pos: local(),
            status: local(),
            opened: local(),
            i: local(),
            byte: local(),
            digit: local(),
            v: local(),
            n: local(),
            d: local(),
            start: local(),
        }
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

    /// Takes scratch memory from the shadow stack: the size on the stack, 16-aligned, plus
    /// 128 bytes of fixed fields (endpoint name at 0, handle at 100, numbers at 104); the
    /// report is written from `buf + 128`.
    fn open_report(&self, b: Body, endpoint: &str) {
        b.local_set(self.n);
        b.global_get(self.stack_pointer)
            .local_tee(self.sp)
            .local_get(self.n)
            .binop(BinaryOp::I32Sub)
            .i32_const(128)
            .binop(BinaryOp::I32Sub)
            .i32_const(-16)
            .binop(BinaryOp::I32And)
            .local_tee(self.buf)
            .global_set(self.stack_pointer);
        self.store_bytes(b, self.buf, 0, endpoint.as_bytes());
        b.local_get(self.buf)
            .i32_const(endpoint.len() as i32)
            .local_get(self.buf)
            .i32_const(100)
            .binop(BinaryOp::I32Add)
            .call(self.endpoint_get)
            .local_set(self.opened);
        b.local_get(self.buf)
            .i32_const(128)
            .binop(BinaryOp::I32Add)
            .local_set(self.pos);
    }

    /// Writes what was put from `buf + 128` to `pos` as one log entry, when the endpoint
    /// opened (it always does under viceroy).
    fn write_report(&self, b: Body) {
        b.local_get(self.opened).unop(walrus::ir::UnaryOp::I32Eqz);
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
    }

    /// Gives the scratch memory back.
    fn close_report(&self, b: Body) {
        b.local_get(self.sp).global_set(self.stack_pointer);
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

    /// Writes `text` at `pos` (which moves on).
    fn text(&self, b: Body, text: &str) {
        self.store_bytes(b, self.pos, 0, text.as_bytes());
        self.advance(b, text.len() as i32);
    }

    fn separator(&self, b: Body) {
        self.text(b, " ");
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
                    .local_set(self.byte);
                for (shift, at) in [(4, 0), (0, 1)] {
                    each.local_get(self.pos);
                    each.local_get(self.byte)
                        .i32_const(shift)
                        .binop(BinaryOp::I32ShrU)
                        .i32_const(15)
                        .binop(BinaryOp::I32And)
                        .local_tee(self.digit);
                    // A digit: '0' + d below ten, 'a' + d - 10 from it.
                    each.i32_const(48)
                        .i32_const(87)
                        .local_get(self.digit)
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
}

/// The dynamic-backend wrapper (see the module's docs).
struct DynamicWrapper {
    ir: Ir,
    slot: GlobalId,
    register: FunctionId,
    k: LocalId,
    started: LocalId,
    ovr_len: LocalId,
    cert_len: LocalId,
    sni_len: LocalId,
}

impl DynamicWrapper {
    fn emit(&self, b: Body, args: &[LocalId]) {
        let ir = &self.ir;
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
            ir.load_i32(b, at + 4);
            b.i32_const(0)
                .local_get(mask)
                .i32_const(bit)
                .binop(BinaryOp::I32And)
                .select(None)
                .local_set(len);
        }
        // The report's size (two hex digits a byte, and separators), and the redirected
        // target (at most 16 bytes) after it.
        b.i32_const(2 * (4 + 4 + CONFIG_LEN) + 16 + 16);
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
        ir.open_report(b, REPORT_ENDPOINT);
        ir.hex_of_i32(b, self.k);
        ir.separator(b);
        ir.hex(b, name, name_len);
        ir.separator(b);
        ir.hex(b, target, target_len);
        ir.separator(b);
        ir.hex_of_i32(b, mask);
        ir.separator(b);
        b.i32_const(CONFIG_LEN).local_set(self.started);
        ir.hex(b, config, self.started);
        for (len, at) in [
            (self.ovr_len, HOST_OVERRIDE_AT),
            (self.cert_len, CERT_HOSTNAME_AT),
            (self.sni_len, SNI_HOSTNAME_AT),
        ] {
            ir.separator(b);
            // The string's pointer, read from the config.
            b.local_get(config);
            ir.load_i32(b, at);
            b.local_set(ir.start);
            ir.hex(b, ir.start, len);
        }
        ir.write_report(b);

        // The redirected target, "127.0.0.2:<k + 1>", after the report.
        b.local_get(ir.pos).local_set(ir.start);
        let ip = format!(
            "{}.{}.{}.{}:",
            SLOT_IP[0], SLOT_IP[1], SLOT_IP[2], SLOT_IP[3]
        );
        ir.text(b, &ip);
        b.local_get(self.k)
            .i32_const(1)
            .binop(BinaryOp::I32Add)
            .local_set(ir.n);
        self.decimal(b);

        b.local_get(name)
            .local_get(name_len)
            .local_get(ir.start)
            .local_get(ir.pos)
            .local_get(ir.start)
            .binop(BinaryOp::I32Sub)
            .local_get(mask)
            .i32_const(!TLS_OPTIONS)
            .binop(BinaryOp::I32And)
            .local_get(config)
            .call(self.register)
            .local_set(ir.status);
        ir.close_report(b);
        b.local_get(ir.status);
    }

    /// `n` (below 100,000) in decimal, without leading zeros, written at `pos`.
    fn decimal(&self, b: Body) {
        let ir = &self.ir;
        b.i32_const(10_000).local_set(ir.d);
        b.i32_const(0).local_set(self.started);
        b.loop_(None, |each| {
            let again = each.id();
            // v = n / d % 10
            each.local_get(ir.n)
                .local_get(ir.d)
                .binop(BinaryOp::I32DivU)
                .i32_const(10)
                .binop(BinaryOp::I32RemU)
                .local_set(ir.v);
            each.local_get(self.started)
                .local_get(ir.v)
                .binop(BinaryOp::I32Or)
                .local_get(ir.d)
                .i32_const(1)
                .binop(BinaryOp::I32Eq)
                .binop(BinaryOp::I32Or);
            each.if_else(
                None,
                |then| {
                    then.local_get(ir.pos)
                        .local_get(ir.v)
                        .i32_const(48)
                        .binop(BinaryOp::I32Add)
                        .store(ir.memory, StoreKind::I32_8 { atomic: false }, Ir::arg(0));
                    ir.advance(then, 1);
                    then.i32_const(1).local_set(self.started);
                },
                |_| {},
            );
            each.local_get(ir.d)
                .i32_const(10)
                .binop(BinaryOp::I32DivU)
                .local_tee(ir.d)
                .br_if(again);
        });
    }
}

/// Something a reporting wrapper writes about a call, after making it.
#[derive(Clone, Copy)]
enum Field {
    /// The four bytes of argument `n`.
    Arg(usize),
    /// The bytes argument `ptr` points at, argument `len` long.
    Bytes { ptr: usize, len: usize },
    /// The four bytes the call wrote where argument `n` points (a handle it returned).
    Out(usize),
    /// The `size` bytes of the struct argument `ptr` points at.
    Struct { ptr: usize, size: i32 },
    /// A string the struct at argument `ptr` holds (pointer at `at`, length at `at + 4`),
    /// when bit `bit` of argument `mask` is set.
    StructBytes {
        ptr: usize,
        at: u64,
        mask: usize,
        bit: i32,
    },
}

/// A wrapper that calls through to `real`, then reports the call (`op`, its status, and
/// `fields`) on `endpoint`, and returns what the call returned.
struct CallReporter {
    ir: Ir,
    real: FunctionId,
    endpoint: &'static str,
    op: &'static str,
    fields: &'static [Field],
    lens: Vec<LocalId>,
}

impl CallReporter {
    fn emit(&self, b: Body, args: &[LocalId]) {
        let ir = &self.ir;
        for arg in args {
            b.local_get(*arg);
        }
        b.call(self.real).local_set(ir.status);
        // Each field's length in bytes, into `lens`.
        for (field, len) in self.fields.iter().zip(&self.lens) {
            match *field {
                Field::Arg(_) | Field::Out(_) => {
                    b.i32_const(4);
                }
                Field::Bytes { len: n, .. } => {
                    b.local_get(args[n]);
                }
                Field::Struct { size, .. } => {
                    b.i32_const(size);
                }
                Field::StructBytes { ptr, at, mask, bit } => {
                    b.local_get(args[ptr]);
                    ir.load_i32(b, at + 4);
                    b.i32_const(0)
                        .local_get(args[mask])
                        .i32_const(bit)
                        .binop(BinaryOp::I32And)
                        .select(None);
                }
            }
            b.local_set(*len);
        }
        b.i32_const(self.op.len() as i32 + 16 + 2 * self.fields.len() as i32);
        for len in &self.lens {
            b.local_get(*len)
                .i32_const(2)
                .binop(BinaryOp::I32Mul)
                .binop(BinaryOp::I32Add);
        }
        ir.open_report(b, self.endpoint);
        ir.text(b, self.op);
        ir.separator(b);
        ir.hex_of_i32(b, ir.status);
        for (field, len) in self.fields.iter().zip(&self.lens) {
            ir.separator(b);
            match *field {
                Field::Arg(n) => ir.hex_of_i32(b, args[n]),
                Field::Bytes { ptr, .. } => ir.hex(b, args[ptr], *len),
                Field::Out(n) => ir.hex(b, args[n], *len),
                Field::Struct { ptr, .. } => ir.hex(b, args[ptr], *len),
                Field::StructBytes { ptr, at, .. } => {
                    b.local_get(args[ptr]);
                    ir.load_i32(b, at);
                    b.local_set(ir.start);
                    ir.hex(b, ir.start, *len);
                }
            }
        }
        ir.write_report(b);
        ir.close_report(b);
        b.local_get(ir.status);
    }
}

/// A downstream fact viceroy leaves absent, answered from [`DOWNSTREAM_STORE`] when the test
/// set it for the request, else by viceroy (absent) as before.
struct FactWrapper {
    ir: Ir,
    open: FunctionId,
    get: FunctionId,
    real: FunctionId,
    key: &'static str,
}

impl FactWrapper {
    fn emit(&self, b: Body, args: &[LocalId]) {
        let ir = &self.ir;
        let [_handle, out, max_len, nwritten] = args else {
            unreachable!("a downstream fact takes a handle, a buffer, its length and a count")
        };
        // Scratch: the store's name at 0, the key at 24, the store's handle at 60.
        b.global_get(ir.stack_pointer)
            .local_tee(ir.sp)
            .i32_const(64)
            .binop(BinaryOp::I32Sub)
            .i32_const(-16)
            .binop(BinaryOp::I32And)
            .local_tee(ir.buf)
            .global_set(ir.stack_pointer);
        ir.store_bytes(b, ir.buf, 0, DOWNSTREAM_STORE.as_bytes());
        ir.store_bytes(b, ir.buf, 24, self.key.as_bytes());
        b.local_get(ir.buf)
            .i32_const(DOWNSTREAM_STORE.len() as i32)
            .local_get(ir.buf)
            .i32_const(60)
            .binop(BinaryOp::I32Add)
            .call(self.open)
            .local_tee(ir.status)
            .unop(walrus::ir::UnaryOp::I32Eqz);
        b.if_else(
            None,
            |then| {
                then.local_get(ir.buf);
                ir.load_i32(then, 60);
                then.local_get(ir.buf)
                    .i32_const(24)
                    .binop(BinaryOp::I32Add)
                    .i32_const(self.key.len() as i32)
                    .local_get(*out)
                    .local_get(*max_len)
                    .local_get(*nwritten)
                    .call(self.get)
                    .local_set(ir.status);
            },
            |_| {},
        );
        ir.close_report(b);
        // Set (0), or set but longer than the buffer (BUFLEN, with the length needed): the
        // test's answer. Anything else: viceroy's.
        b.local_get(ir.status)
            .unop(walrus::ir::UnaryOp::I32Eqz)
            .local_get(ir.status)
            .i32_const(BUFLEN)
            .binop(BinaryOp::I32Eq)
            .binop(BinaryOp::I32Or);
        b.if_else(
            Some(ValType::I32),
            |then| {
                then.local_get(ir.status);
            },
            |otherwise| {
                for arg in args {
                    otherwise.local_get(*arg);
                }
                otherwise.call(self.real);
            },
        );
    }
}

/// `FastlyStatus::BUFLEN`: the value is longer than the buffer.
const BUFLEN: i32 = 4;

type Body<'a, 'b> = &'a mut walrus::InstrSeqBuilder<'b>;

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
