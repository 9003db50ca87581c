//! The dynamic-backend wrapper: reports the registration, then registers it at
//! `127.0.0.2:<n>` without TLS (see `module_rewrite`'s docs).

use walrus::ir::{BinaryOp, StoreKind};
use walrus::{FunctionId, GlobalId, LocalId};

use super::ir::{Body, Ir};

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

/// The dynamic-backend wrapper (see the module's docs).
pub(super) struct DynamicWrapper {
    pub(super) ir: Ir,
    pub(super) slot: GlobalId,
    pub(super) register: FunctionId,
    pub(super) k: LocalId,
    pub(super) started: LocalId,
    pub(super) ovr_len: LocalId,
    pub(super) cert_len: LocalId,
    pub(super) sni_len: LocalId,
}

impl DynamicWrapper {
    pub(super) fn emit(&self, b: Body, args: &[LocalId]) {
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
