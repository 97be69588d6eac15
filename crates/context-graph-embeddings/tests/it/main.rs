//! Integration tests of the artifact manager against the loopback Hub emulator.
//! Test names start with `artifacts::` so that `cargo test artifacts` runs them.

mod architecture;
mod artifacts;
mod support;
