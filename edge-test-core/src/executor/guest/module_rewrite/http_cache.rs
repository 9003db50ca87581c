//! Fastly's HTTP cache for a guest: edge-test's shim (`http-cache-shim/` beside this crate's
//! sources, a Rust module built for wasm32-wasip1) is merged into the guest's module, and
//! each of the guest's `fastly_http_cache::<name>` imports becomes a call of the shim's
//! `shim_<name>`.
//!
//! The merge copies the shim's functions, globals and data into the guest's module, with a
//! memory of their own (multi-memory), so the guest's allocator and data are never touched.
//! The shim reaches the guest's memory only through four bridge imports, written here: the
//! guest's `__stack_pointer` (to stage hostcall buffers on its shadow stack) and
//! `memory.copy` each way between the two memories. The shim's other imports (the core cache,
//! requests, responses, logs) become the guest's own imports of the same calls, so its
//! core-cache calls are reported like the guest's (`cache_calls`, which wraps after this).
//!
//! The shim must not use a function table: its function pointers would be indices into a
//! table the merge cannot renumber. `merge` refuses a shim that does.

use std::collections::HashMap;

use walrus::ir::{
    Instr, InstrLocId, InstrSeqId, InstrSeqType, Visitor, VisitorMut, dfs_in_order,
    dfs_pre_order_mut,
};
use walrus::{
    ConstExpr, DataId, DataKind, ElementId, FunctionBuilder, FunctionId, FunctionKind, GlobalId,
    GlobalKind, ImportKind, LocalFunction, LocalId, MemoryId, Module, TableId, TypeId, ValType,
};

/// The module whose imports the shim replaces.
pub(crate) const HTTP_CACHE_MODULE: &str = "fastly_http_cache";

/// Merges `shim` into `module` and points the guest's `fastly_http_cache` imports at it.
/// Returns how many imports it replaced (none: the module is left as it was).
pub(super) fn merge(
    module: &mut Module,
    shim: &[u8],
    guest_memory: MemoryId,
    stack_pointer: GlobalId,
) -> Result<usize, String> {
    let imports: Vec<(FunctionId, String)> = module
        .imports
        .iter()
        .filter(|i| i.module == HTTP_CACHE_MODULE)
        .filter_map(|i| match i.kind {
            ImportKind::Function(f) => Some((f, i.name.clone())),
            _ => None,
        })
        .collect();
    if imports.is_empty() {
        return Ok(0);
    }
    let shim = Module::from_buffer(shim)
        .map_err(|e| format!("walrus cannot read edge-test's HTTP cache shim: {e}"))?;
    let (funcs, ensure_data) = {
        let mut merge = Merge::new(module, &shim, guest_memory, stack_pointer)?;
        let placed = merge.data()?;
        merge.functions()?;
        let ensure_data = merge.ensure_data(&placed);
        (merge.funcs, ensure_data)
    };
    let exports: HashMap<&str, FunctionId> = shim
        .exports
        .iter()
        .filter_map(|e| match e.item {
            walrus::ExportItem::Function(f) => Some((e.name.as_str(), f)),
            _ => None,
        })
        .collect();
    let mut replaced = 0;
    for (import, name) in imports {
        let Some(&shim_fn) = exports.get(format!("shim_{name}").as_str()) else {
            // A call this shim does not know (a newer SDK's): viceroy answers it, as before.
            continue;
        };
        let target = funcs[&shim_fn];
        let (want, have) = (
            signature(module, module.funcs.get(import).ty()),
            signature(module, module.funcs.get(target).ty()),
        );
        if want != have {
            return Err(format!(
                "the guest imports fastly_http_cache::{name} as {want:?}, the shim has {have:?}"
            ));
        }
        module
            .replace_imported_func(import, |(body, args)| {
                body.call(ensure_data);
                for arg in args {
                    body.local_get(*arg);
                }
                body.call(target);
            })
            .map_err(|e| format!("cannot replace fastly_http_cache::{name}: {e}"))?;
        replaced += 1;
    }
    Ok(replaced)
}

fn signature(module: &Module, ty: TypeId) -> (Vec<walrus::ValType>, Vec<walrus::ValType>) {
    let ty = module.types.get(ty);
    (ty.params().to_vec(), ty.results().to_vec())
}

const WASM_PAGE: u64 = 64 * 1024;

/// How much of its shadow stack a guest keeps at least.
const MIN_GUEST_STACK: u64 = 256 * 1024;

/// The shim's data goes at the low addresses of the guest's memory (from 1 KiB to
/// `shim_end`), which belong to the guest's shadow stack when its stack comes first (as rustc
/// lays out a wasm32 guest): its stack would reach them only after growing down most of its
/// 1 MiB. A guest laid out otherwise keeps its data or heap there, and is refused.
fn check_layout(module: &Module, stack_pointer: GlobalId, shim_end: u64) -> Result<(), String> {
    let stack_top = match &module.globals.get(stack_pointer).kind {
        GlobalKind::Local(ConstExpr::Value(walrus::ir::Value::I32(top))) => *top as u32 as u64,
        _ => return Err("the module's `__stack_pointer` has no constant start".to_owned()),
    };
    if stack_top < shim_end + MIN_GUEST_STACK {
        return Err(format!(
            "its shadow stack starts at {stack_top:#x}: too low to leave room for edge-test's \
             HTTP cache below it ({shim_end:#x} bytes)"
        ));
    }
    for data in module.data.iter() {
        if let DataKind::Active { offset, .. } = &data.kind {
            let at = match offset {
                ConstExpr::Value(walrus::ir::Value::I32(at)) => *at as u32 as u64,
                _ => continue,
            };
            if at < stack_top {
                return Err(format!(
                    "its data starts at {at:#x}, below its stack ({stack_top:#x}): edge-test's \
                     HTTP cache lives there in a guest whose stack comes first"
                ));
            }
        }
    }
    Ok(())
}

/// The shim's ids, mapped to the guest module's.
struct Merge<'a> {
    module: &'a mut Module,
    shim: &'a Module,
    memory: MemoryId,
    funcs: HashMap<FunctionId, FunctionId>,
    globals: HashMap<GlobalId, GlobalId>,
    types: HashMap<TypeId, TypeId>,
    data: HashMap<DataId, DataId>,
}

impl<'a> Merge<'a> {
    fn new(
        module: &'a mut Module,
        shim: &'a Module,
        guest_memory: MemoryId,
        stack_pointer: GlobalId,
    ) -> Result<Self, String> {
        let mut memories = shim.memories.iter();
        let (Some(shim_memory), None) = (memories.next(), memories.next()) else {
            return Err("edge-test's HTTP cache shim must have exactly one memory".to_owned());
        };
        if shim.elements.iter().next().is_some() {
            return Err(
                "edge-test's HTTP cache shim uses a function table, which the merge \
                        cannot renumber"
                    .to_owned(),
            );
        }
        check_layout(module, stack_pointer, shim_memory.initial * WASM_PAGE)?;
        let mut merge = Self {
            module,
            shim,
            memory: guest_memory,
            funcs: HashMap::new(),
            globals: HashMap::new(),
            types: HashMap::new(),
            data: HashMap::new(),
        };
        let shim_stack = super::stack_pointer(shim)
            .ok_or("edge-test's HTTP cache shim has no `__stack_pointer`")?;
        for global in shim.globals.iter() {
            // The shim's frames go on the guest's shadow stack, like any call of the guest's.
            if global.id() == shim_stack {
                merge.globals.insert(global.id(), stack_pointer);
                continue;
            }
            let init = match &global.kind {
                GlobalKind::Local(ConstExpr::Value(v)) => ConstExpr::Value(*v),
                _ => {
                    return Err(
                        "edge-test's HTTP cache shim has a global the merge cannot copy".into(),
                    );
                }
            };
            let id = merge
                .module
                .globals
                .add_local(global.ty, global.mutable, global.shared, init);
            merge.globals.insert(global.id(), id);
        }
        merge.bridge(stack_pointer)?;
        Ok(merge)
    }

    /// The four bridge imports, and the shim's other imports as the guest's.
    fn bridge(&mut self, stack_pointer: GlobalId) -> Result<(), String> {
        let memory = self.memory;
        for import in self.shim.imports.iter() {
            let ImportKind::Function(f) = import.kind else {
                return Err(format!(
                    "edge-test's HTTP cache shim imports {}::{}, which is not a function",
                    import.module, import.name
                ));
            };
            let ty = self.shim.types.get(self.shim.funcs.get(f).ty());
            let (params, results) = (ty.params().to_vec(), ty.results().to_vec());
            let id = if import.module == "edge_test_bridge" {
                let mut builder = FunctionBuilder::new(&mut self.module.types, &params, &results);
                let args: Vec<LocalId> =
                    params.iter().map(|t| self.module.locals.add(*t)).collect();
                let mut body = builder.func_body();
                match import.name.as_str() {
                    "stack_get" => {
                        body.global_get(stack_pointer);
                    }
                    "stack_set" => {
                        body.local_get(args[0]).global_set(stack_pointer);
                    }
                    // (dst, src, len) both ways: one memory since viceroy allows a core
                    // module no other, but the shim keeps to its own addresses.
                    "copy_in" | "copy_out" => {
                        body.local_get(args[0])
                            .local_get(args[1])
                            .local_get(args[2])
                            .memory_copy(memory, memory);
                    }
                    other => return Err(format!("unknown bridge import `{other}`")),
                }
                builder.finish(args, &mut self.module.funcs)
            } else {
                match self.module.imports.get_func(&import.module, &import.name) {
                    Ok(existing) => {
                        let have = signature(self.module, self.module.funcs.get(existing).ty());
                        if have != (params.clone(), results.clone()) {
                            return Err(format!(
                                "the guest imports {}::{} as {have:?}, the shim as {:?}",
                                import.module,
                                import.name,
                                (params, results)
                            ));
                        }
                        existing
                    }
                    Err(_) => {
                        let ty = self.module.types.add(&params, &results);
                        self.module
                            .add_import_func(&import.module, &import.name, ty)
                            .0
                    }
                }
            };
            self.funcs.insert(f, id);
        }
        Ok(())
    }

    fn ty(&mut self, ty: TypeId) -> TypeId {
        if let Some(mapped) = self.types.get(&ty) {
            return *mapped;
        }
        let t = self.shim.types.get(ty);
        let mapped = self.module.types.add(t.params(), t.results());
        self.types.insert(ty, mapped);
        mapped
    }

    /// Copies every function the shim defines (placeholders first, so calls between them
    /// can be mapped, then their bodies).
    fn functions(&mut self) -> Result<(), String> {
        let locals: Vec<(FunctionId, &LocalFunction)> = self
            .shim
            .funcs
            .iter()
            .filter_map(|f| match &f.kind {
                FunctionKind::Local(local) => Some((f.id(), local)),
                _ => None,
            })
            .collect();
        for (id, local) in &locals {
            let ty = self.shim.types.get(local.ty());
            let placeholder =
                FunctionBuilder::new(&mut self.module.types, ty.params(), ty.results());
            let args = ty
                .params()
                .iter()
                .map(|t| self.module.locals.add(*t))
                .collect();
            let new = placeholder.finish(args, &mut self.module.funcs);
            self.funcs.insert(*id, new);
        }
        for (id, local) in locals {
            let copied = self.copy_function(local)?;
            self.module.funcs.get_mut(self.funcs[&id]).kind = FunctionKind::Local(copied);
        }
        Ok(())
    }

    /// Copies one function: its blocks first (cloned instructions, each keeping its
    /// location in the shim's code, which names it uniquely), then the ids each instruction
    /// names, read from the shim's function and assigned in the copy by location. (walrus's
    /// mutable visit reaches each id of an instruction twice, so ids are assigned, never
    /// transformed in place.)
    fn copy_function(&mut self, local: &LocalFunction) -> Result<LocalFunction, String> {
        let mut seen = Seen::default();
        dfs_in_order(&mut seen, local, local.entry_block());
        if seen.duplicate {
            return Err("the shim's instructions have no distinct code locations".to_owned());
        }
        let ty = self.shim.types.get(local.ty());
        let mut builder = FunctionBuilder::new(&mut self.module.types, ty.params(), ty.results());
        let mut ids = Ids {
            locals: HashMap::new(),
            seqs: HashMap::new(),
        };
        let args: Vec<LocalId> = local
            .args
            .iter()
            .map(|a| ids.local(self.module, self.shim, *a))
            .collect();
        ids.seqs.insert(local.entry_block(), builder.func_body_id());
        self.copy_seq(local, local.entry_block(), &mut builder, &mut ids)?;
        let mut mapped = HashMap::new();
        for (loc, names) in seen.by_instr {
            let mut new = Vec::with_capacity(names.len());
            for id in names {
                new.push(self.map_id(id, &mut ids)?);
            }
            mapped.insert(loc, new);
        }
        let mut copied = builder.local_func(args);
        let entry = copied.entry_block();
        dfs_pre_order_mut(
            &mut Assign {
                mapped: &mapped,
                current: None,
                at: 0,
            },
            &mut copied,
            entry,
        );
        Ok(copied)
    }

    fn copy_seq(
        &mut self,
        local: &LocalFunction,
        seq: InstrSeqId,
        builder: &mut FunctionBuilder,
        ids: &mut Ids,
    ) -> Result<(), String> {
        let target = ids.seqs[&seq];
        for (instr, loc) in &local.block(seq).instrs {
            let nested: Vec<InstrSeqId> = match instr {
                Instr::Block(b) => vec![b.seq],
                Instr::Loop(l) => vec![l.seq],
                Instr::IfElse(i) => vec![i.consequent, i.alternative],
                Instr::TryTable(_) | Instr::Try(_) => {
                    return Err("edge-test's HTTP cache shim uses exceptions".to_owned());
                }
                _ => Vec::new(),
            };
            for inner in nested {
                let ty = match local.block(inner).ty {
                    InstrSeqType::Simple(t) => InstrSeqType::Simple(t),
                    InstrSeqType::MultiValue(t) => InstrSeqType::MultiValue(self.ty(t)),
                };
                let id = builder.dangling_instr_seq(ty).id();
                ids.seqs.insert(inner, id);
                self.copy_seq(local, inner, builder, ids)?;
            }
            // Branch targets are not visited (walrus assumes a traversal has seen them): they
            // are the enclosing blocks, mapped already.
            let mut instr = instr.clone();
            let enclosing = |s: &InstrSeqId| {
                ids.seqs
                    .get(s)
                    .copied()
                    .ok_or("a branch out of its function")
            };
            match &mut instr {
                Instr::Br(b) => b.block = enclosing(&b.block)?,
                Instr::BrIf(b) => b.block = enclosing(&b.block)?,
                Instr::BrTable(b) => {
                    b.default = enclosing(&b.default)?;
                    for block in b.blocks.iter_mut() {
                        *block = enclosing(block)?;
                    }
                }
                _ => {}
            }
            builder.instr_seq(target).instrs_mut().push((instr, *loc));
        }
        Ok(())
    }

    fn map_id(&mut self, id: Id, ids: &mut Ids) -> Result<Id, String> {
        Ok(match id {
            Id::Local(l) => Id::Local(ids.local(self.module, self.shim, l)),
            Id::Seq(s) => Id::Seq(*ids.seqs.get(&s).ok_or("a branch to an unknown block")?),
            Id::Func(f) => Id::Func(*self.funcs.get(&f).ok_or("a call to an unknown function")?),
            Id::Global(g) => Id::Global(*self.globals.get(&g).ok_or("an unknown global")?),
            Id::Memory(_) => Id::Memory(self.memory),
            Id::Type(t) => Id::Type(self.ty(t)),
            Id::Data(d) => Id::Data(*self.data.get(&d).ok_or("an unknown data segment")?),
            Id::Table | Id::Element => {
                return Err(
                    "edge-test's HTTP cache shim uses a function table, which the merge \
                            cannot renumber"
                        .to_owned(),
                );
            }
        })
    }

    /// The shim's data segments, as passive segments that `ensure_data` copies into place at
    /// the shim's first call in an instance. (As active segments, they would stretch the
    /// memory image wasmtime maps for every instance over the guest's whole stack region,
    /// and every test's first request measurably slower, HTTP cache used or not.)
    fn data(&mut self) -> Result<Vec<(i32, u32, DataId)>, String> {
        let mut placed = Vec::new();
        for data in self.shim.data.iter() {
            let id = self.module.data.add(DataKind::Passive, data.value.clone());
            self.data.insert(data.id(), id);
            if let DataKind::Active { offset, .. } = &data.kind {
                let ConstExpr::Value(walrus::ir::Value::I32(at)) = offset else {
                    return Err("edge-test's HTTP cache shim places data at no constant".into());
                };
                placed.push((*at, data.value.len() as u32, id));
            }
        }
        Ok(placed)
    }

    /// A function that copies the shim's data into place, once per instance.
    fn ensure_data(&mut self, placed: &[(i32, u32, DataId)]) -> FunctionId {
        let copied = self.module.globals.add_local(
            ValType::I32,
            true,
            false,
            ConstExpr::Value(walrus::ir::Value::I32(0)),
        );
        let memory = self.memory;
        let mut builder = FunctionBuilder::new(&mut self.module.types, &[], &[]);
        builder.func_body().global_get(copied).if_else(
            None,
            |_| {},
            |copy| {
                for (at, len, data) in placed {
                    copy.i32_const(*at)
                        .i32_const(0)
                        .i32_const(*len as i32)
                        .memory_init(memory, *data);
                }
                copy.i32_const(1).global_set(copied);
            },
        );
        builder.finish(Vec::new(), &mut self.module.funcs)
    }
}

/// The ids local to the function being copied.
struct Ids {
    locals: HashMap<LocalId, LocalId>,
    seqs: HashMap<InstrSeqId, InstrSeqId>,
}

impl Ids {
    fn local(&mut self, module: &mut Module, shim: &Module, local: LocalId) -> LocalId {
        *self
            .locals
            .entry(local)
            .or_insert_with(|| module.locals.add(shim.locals.get(local).ty()))
    }
}

#[derive(Clone, Copy)]
enum Id {
    Local(LocalId),
    Seq(InstrSeqId),
    Func(FunctionId),
    Global(GlobalId),
    Memory(MemoryId),
    Type(TypeId),
    Data(DataId),
    Table,
    Element,
}

/// The ids each instruction of a function names, by the instruction's code location.
#[derive(Default)]
struct Seen {
    by_instr: HashMap<u32, Vec<Id>>,
    current: Option<u32>,
    duplicate: bool,
}

impl Seen {
    fn push(&mut self, id: Id) {
        if let Some(loc) = self.current {
            self.by_instr.entry(loc).or_default().push(id);
        }
    }
}

impl<'i> Visitor<'i> for Seen {
    fn start_instr_seq(&mut self, _: &'i walrus::ir::InstrSeq) {
        // A block's own type is mapped when the block is copied.
        self.current = None;
    }
    fn visit_instr(&mut self, _: &'i Instr, loc: &'i InstrLocId) {
        self.current = Some(loc.data());
        if self.by_instr.insert(loc.data(), Vec::new()).is_some() {
            self.duplicate = true;
        }
    }
    fn visit_local_id(&mut self, id: &LocalId) {
        self.push(Id::Local(*id));
    }
    fn visit_instr_seq_id(&mut self, id: &InstrSeqId) {
        self.push(Id::Seq(*id));
    }
    fn visit_function_id(&mut self, id: &FunctionId) {
        self.push(Id::Func(*id));
    }
    fn visit_global_id(&mut self, id: &GlobalId) {
        self.push(Id::Global(*id));
    }
    fn visit_memory_id(&mut self, id: &MemoryId) {
        self.push(Id::Memory(*id));
    }
    fn visit_type_id(&mut self, id: &TypeId) {
        self.push(Id::Type(*id));
    }
    fn visit_data_id(&mut self, id: &DataId) {
        self.push(Id::Data(*id));
    }
    fn visit_table_id(&mut self, id: &TableId) {
        let _ = id;
        self.push(Id::Table);
    }
    fn visit_element_id(&mut self, id: &ElementId) {
        let _ = id;
        self.push(Id::Element);
    }
}

/// Assigns each instruction's mapped ids in visit order; the second round of visits walrus
/// makes assigns them again.
struct Assign<'m> {
    mapped: &'m HashMap<u32, Vec<Id>>,
    current: Option<&'m [Id]>,
    at: usize,
}

impl Assign<'_> {
    fn next(&mut self) -> Option<Id> {
        let ids = self.current?;
        let id = ids.get(self.at % ids.len().max(1)).copied();
        self.at += 1;
        id
    }
}

impl VisitorMut for Assign<'_> {
    fn start_instr_seq_mut(&mut self, _: &mut walrus::ir::InstrSeq) {
        self.current = None;
    }
    fn visit_instr_mut(&mut self, _: &mut Instr, loc: &mut InstrLocId) {
        self.current = self.mapped.get(&loc.data()).map(Vec::as_slice);
        self.at = 0;
    }
    fn visit_local_id_mut(&mut self, id: &mut LocalId) {
        if let Some(Id::Local(new)) = self.next() {
            *id = new;
        }
    }
    fn visit_instr_seq_id_mut(&mut self, id: &mut InstrSeqId) {
        if let Some(Id::Seq(new)) = self.next() {
            *id = new;
        }
    }
    fn visit_function_id_mut(&mut self, id: &mut FunctionId) {
        if let Some(Id::Func(new)) = self.next() {
            *id = new;
        }
    }
    fn visit_global_id_mut(&mut self, id: &mut GlobalId) {
        if let Some(Id::Global(new)) = self.next() {
            *id = new;
        }
    }
    fn visit_memory_id_mut(&mut self, id: &mut MemoryId) {
        if let Some(Id::Memory(new)) = self.next() {
            *id = new;
        }
    }
    fn visit_type_id_mut(&mut self, id: &mut TypeId) {
        if let Some(Id::Type(new)) = self.next() {
            *id = new;
        }
    }
    fn visit_data_id_mut(&mut self, id: &mut DataId) {
        if let Some(Id::Data(new)) = self.next() {
            *id = new;
        }
    }
    fn visit_table_id_mut(&mut self, _: &mut TableId) {
        self.next();
    }
    fn visit_element_id_mut(&mut self, _: &mut ElementId) {
        self.next();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest laid out as rustc lays one out: its 1 MiB stack first, its data above.
    const GUEST: &str = r#"
        (module
          (import "fastly_http_cache" "is_request_cacheable"
            (func $cacheable (param i32 i32) (result i32)))
          (import "fastly_http_cache" "get_hits" (func $hits (param i32 i32) (result i32)))
          (memory (export "memory") 17)
          (global $__stack_pointer (mut i32) (i32.const 1048576))
          (data (i32.const 1048576) "guest data")
          (func (export "_start")
            (drop (call $cacheable (i32.const 0) (i32.const 0)))
            (drop (call $hits (i32.const 0) (i32.const 0)))))
    "#;

    fn shim() -> Vec<u8> {
        let path = crate::guest_build::http_cache_shim_wasm().expect("the shim builds");
        std::fs::read(path).unwrap()
    }

    fn merged(guest: &str) -> Result<Module, String> {
        let mut module = Module::from_buffer(&wat::parse_str(guest).unwrap()).unwrap();
        let memory = module.memories.iter().next().unwrap().id();
        let stack = super::super::stack_pointer(&module).unwrap();
        let replaced = merge(&mut module, &shim(), memory, stack)?;
        assert_eq!(replaced, 2);
        Ok(module)
    }

    #[test]
    fn the_guests_http_cache_imports_become_the_shims_functions() {
        let mut module = merged(GUEST).unwrap();
        assert!(
            module.imports.iter().all(|i| i.module != HTTP_CACHE_MODULE),
            "no fastly_http_cache import is left"
        );
        assert_eq!(
            module.memories.iter().count(),
            1,
            "viceroy allows one memory"
        );
        assert!(
            module
                .imports
                .get_func("fastly_cache", "transaction_lookup_async")
                .is_ok(),
            "the shim's core-cache calls are the guest's imports"
        );
        let bytes = module.emit_wasm();
        Module::from_buffer(&bytes).expect("the merged module reads back");
    }

    #[test]
    fn a_guest_whose_data_lies_where_the_shim_goes_is_refused_with_the_reason() {
        let low_data = GUEST.replace(
            r#"(data (i32.const 1048576) "guest data")"#,
            r#"(data (i32.const 2048) "guest data")"#,
        );
        let error = merged(&low_data).expect_err("refused");
        assert!(
            error.contains("its data starts at 0x800, below its stack"),
            "{error}"
        );
    }

    #[test]
    fn a_guest_with_a_small_stack_is_refused_with_the_reason() {
        let small_stack = GUEST.replace("(i32.const 1048576))", "(i32.const 131072))");
        let error = merged(&small_stack).expect_err("refused");
        assert!(error.contains("too low to leave room"), "{error}");
    }
}
