//! The core-cache reporters: each calls through, then reports the call (its key or handle,
//! the handle it returned, the write options and surrogate keys) for `cache_ledger`.

use walrus::ir::BinaryOp;
use walrus::{FunctionId, LocalId};

use super::ir::{Body, Ir};

/// The log endpoint core-cache calls are reported on.
pub(crate) const CACHE_ENDPOINT: &str = "edge-test:cache-call";

/// The core-cache calls whose keys and surrogate keys the runner needs to list what the
/// guest stored (`cache_ledger`), reported on [`CACHE_ENDPOINT`] after each call.
pub(super) const CACHE_CALLS: &[(&str, &[Field])] = {
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

/// Something a reporting wrapper writes about a call, after making it.
#[derive(Clone, Copy)]
pub(super) enum Field {
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
pub(super) struct CallReporter {
    pub(super) ir: Ir,
    pub(super) real: FunctionId,
    pub(super) endpoint: &'static str,
    pub(super) op: &'static str,
    pub(super) fields: &'static [Field],
    pub(super) lens: Vec<LocalId>,
}

impl CallReporter {
    pub(super) fn emit(&self, b: Body, args: &[LocalId]) {
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
