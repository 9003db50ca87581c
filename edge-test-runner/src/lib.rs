//! The parts of the thin runner (`src/main.rs`) that need no process of their own: a library
//! so that they have unit tests (`cargo test` here), which the binary, built to start without
//! the C library, cannot host. Not an API: only the binary uses it.

#![cfg_attr(not(test), no_std)]
#![doc(hidden)]

pub mod text;
