//! edge-test's own test suite lives in `tests/`.
