//! Integration tests of the artifact manager against the loopback Hub emulator.
//! Test names start with `artifacts::` so that `cargo test artifacts` runs them.

// Tests read their own switches (CG_TEST_*, CG_SKIP_*) and start children with a real
// environment; the ban on the process environment is for the library.
#![allow(clippy::disallowed_methods)]

mod architecture;
mod artifacts;
mod fuzz_corpus;
mod support;
