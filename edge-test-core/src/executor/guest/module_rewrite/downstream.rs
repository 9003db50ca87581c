//! The downstream facts viceroy answers "absent" (TLS, fingerprints), answered from a
//! hidden config store when the test set them for the request.

use walrus::ir::BinaryOp;
use walrus::{FunctionId, LocalId, ValType};

use super::ir::{Body, Ir};

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

/// A downstream fact viceroy leaves absent, answered from [`DOWNSTREAM_STORE`] when the test
/// set it for the request, else by viceroy (absent) as before.
pub(super) struct FactWrapper {
    pub(super) ir: Ir,
    pub(super) open: FunctionId,
    pub(super) get: FunctionId,
    pub(super) real: FunctionId,
    pub(super) key: &'static str,
}

impl FactWrapper {
    pub(super) fn emit(&self, b: Body, args: &[LocalId]) {
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
