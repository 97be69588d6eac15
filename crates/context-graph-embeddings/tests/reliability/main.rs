//! Reliability suite (issue 4): proves under every failure we can provoke on one machine
//! that what reaches a final path of the cache (`blobs/<sha>`, `snapshots/…`) is exactly the
//! pinned bytes, or nothing at all with a clear error.
//!
//! | module | what it provokes |
//! |---|---|
//! | [`faults`] | lying and failing servers (emulator-injected faults), pinned and unpinned |
//! | [`crash`] | SIGKILL of a downloading process at every crash point |
//! | [`concurrency`] | several processes on one cache, with and without working file locks |
//! | [`disk`] | a full disk (a small tmpfs mounted by the test) |
//! | [`hostile`] | hostile manifests, safetensors headers, symlinks in the cache, secrets |
//! | [`hostile_replay`] | a hostile Hub (random faults per request, seeded) with random kills, replayed over many seeds |
//!
//! Each test prints `RELIABILITY|…` evidence lines; `scripts/reliability-report` runs the
//! suite and turns them into `RELIABILITY.md`. Some tests start this binary again as a child
//! process (see [`child`]).

// Tests read their own switches (CG_TEST_*, CG_SKIP_*) and start children with a real
// environment; the ban on the process environment is for the library.
#![allow(clippy::disallowed_methods)]

/// The name of the test this is called in, e.g. `faults::stalls_longer_than_the_idle_timeout`.
macro_rules! test_name {
    () => {{
        fn here() {}
        $crate::support::clean_test_name(std::any::type_name_of_val(&here))
    }};
}

mod child;
mod concurrency;
mod crash;
mod disk;
mod faults;
mod hostile;
mod hostile_replay;
mod support;
