//! Writing a wrapper's body: scratch memory from the guest's shadow stack, constants stored
//! byte by byte, hex for reports, and a report written to a log endpoint.

use walrus::ir::{BinaryOp, ExtendedLoad, LoadKind, MemArg, StoreKind};
use walrus::{FunctionId, GlobalId, LocalId, MemoryId, Module, ValType};

/// The module-wide things a wrapper's body uses, and the locals of one wrapper.
pub(super) struct Ir {
    pub(super) memory: MemoryId,
    pub(super) stack_pointer: GlobalId,
    pub(super) endpoint_get: FunctionId,
    pub(super) log_write: FunctionId,
    pub(super) sp: LocalId,
    pub(super) buf: LocalId,
    pub(super) pos: LocalId,
    pub(super) status: LocalId,
    /// What `endpoint_get` returned.
    pub(super) opened: LocalId,
    pub(super) i: LocalId,
    pub(super) byte: LocalId,
    pub(super) digit: LocalId,
    pub(super) v: LocalId,
    pub(super) n: LocalId,
    pub(super) d: LocalId,
    pub(super) start: LocalId,
}

/// What `rewrite` found in the module that every wrapper needs.
#[derive(Clone, Copy)]
pub(super) struct Shared {
    pub(super) memory: MemoryId,
    pub(super) stack_pointer: GlobalId,
    pub(super) endpoint_get: FunctionId,
    pub(super) log_write: FunctionId,
}

impl Ir {
    pub(super) fn new(module: &mut Module, shared: Shared) -> Self {
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

    pub(super) fn arg(offset: u64) -> MemArg {
        MemArg { align: 1, offset }
    }

    pub(super) fn load_i32(&self, b: Body, offset: u64) {
        b.load(
            self.memory,
            LoadKind::I32 { atomic: false },
            Self::arg(offset),
        );
    }

    /// Takes scratch memory from the shadow stack: the size on the stack, 16-aligned, plus
    /// 128 bytes of fixed fields (endpoint name at 0, handle at 100, numbers at 104); the
    /// report is written from `buf + 128`.
    pub(super) fn open_report(&self, b: Body, endpoint: &str) {
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
    pub(super) fn write_report(&self, b: Body) {
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
    pub(super) fn close_report(&self, b: Body) {
        b.local_get(self.sp).global_set(self.stack_pointer);
    }

    /// Stores `bytes` at `base + offset`, one byte at a time (they are short constants).
    pub(super) fn store_bytes(&self, b: Body, base: LocalId, offset: u64, bytes: &[u8]) {
        for (i, byte) in bytes.iter().enumerate() {
            b.local_get(base).i32_const(i32::from(*byte)).store(
                self.memory,
                StoreKind::I32_8 { atomic: false },
                Self::arg(offset + i as u64),
            );
        }
    }

    /// Writes `text` at `pos` (which moves on).
    pub(super) fn text(&self, b: Body, text: &str) {
        self.store_bytes(b, self.pos, 0, text.as_bytes());
        self.advance(b, text.len() as i32);
    }

    pub(super) fn separator(&self, b: Body) {
        self.text(b, " ");
    }

    pub(super) fn advance(&self, b: Body, by: i32) {
        b.local_get(self.pos)
            .i32_const(by)
            .binop(BinaryOp::I32Add)
            .local_set(self.pos);
    }

    /// The four bytes of `value` (little-endian), in hex.
    pub(super) fn hex_of_i32(&self, b: Body, value: LocalId) {
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
    pub(super) fn hex(&self, b: Body, ptr: LocalId, len: LocalId) {
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

pub(super) type Body<'a, 'b> = &'a mut walrus::InstrSeqBuilder<'b>;
