//! The viceroy engine both executors use: compiling a guest, running its invocations on
//! one thread, and everything that watches it run (its logs, its traps, its connections).
//! Every assumption about viceroy-lib's behaviour lives in `viceroy_compat`.

mod cache_control;
mod cache_ledger;
mod compile;
pub(crate) mod dynamic_backends;
mod kv_guest;
pub(crate) mod log_sink;
mod module_rewrite;
pub(crate) mod network_fence;
mod platform_files;
mod runner;
mod trap_capture;
mod trap_lines;
pub(crate) mod viceroy_compat;

pub(crate) use compile::CompiledGuest;
pub(crate) use runner::GuestRunner;
