//! Cross-crate and end-to-end tests of nobounce live in `tests/`; the
//! harness they use is the `nobounce-test-support` crate.
