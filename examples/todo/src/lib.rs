//! The todo service itself is the guest crate in `guest/`; its edge tests are in `tests/`.
