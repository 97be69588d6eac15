//! Test switches, compiled only with the `failpoints` cargo feature (the reliability suite
//! turns it on; release binaries never contain it, so no variable can make a tool that writes
//! into a shared cache kill itself or drop its locks).
//!
//! - Crash points: `CG_MODELS_CRASH_AT=<point>[:<n>]` makes the process kill itself with
//!   SIGKILL the `n`-th time (default the first) it reaches `<point>`, so crash-safety tests can
//!   stop a download exactly between two steps. Points: `download.chunk` (after each chunk is
//!   written), `download.before_rename`, `download.after_rename`, `snapshot.before_link`,
//!   `snapshot.after_link`, `ref.before_write`, `stamp.before_write`, `stamp.after_write`.
//! - Simulated locks: `CG_MODELS_TEST_NO_LOCKS=1` makes every blob lock a silent no-op that
//!   still claims success, as `flock` does on some network file systems, for the tests that
//!   prove correctness without locks.
//!
//! Without the feature, [`hit`] is an empty inline function and [`locks_simulated`] is false.

#[cfg(feature = "failpoints")]
mod armed {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    use crate::artifacts::environment::{EnvLookup, ProcessEnv, CRASH_AT_ENV, NO_LOCKS_ENV};

    struct Armed {
        point: String,
        nth: u64,
        hits: AtomicU64,
    }

    fn armed() -> Option<&'static Armed> {
        static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
        ARMED
            .get_or_init(|| {
                let spec = ProcessEnv.var(CRASH_AT_ENV)?;
                let (point, nth) = match spec.split_once(':') {
                    Some((point, n)) => (point.to_owned(), n.parse().unwrap_or(1)),
                    None => (spec, 1),
                };
                Some(Armed {
                    point,
                    nth: nth.max(1),
                    hits: AtomicU64::new(0),
                })
            })
            .as_ref()
    }

    pub(crate) fn hit(point: &str) {
        if let Some(armed) = armed() {
            if armed.point == point && armed.hits.fetch_add(1, Ordering::SeqCst) + 1 == armed.nth {
                let _ = rustix::process::kill_process(
                    rustix::process::getpid(),
                    rustix::process::Signal::KILL,
                );
            }
        }
    }

    pub(crate) fn locks_simulated() -> bool {
        static SIMULATED: OnceLock<bool> = OnceLock::new();
        *SIMULATED.get_or_init(|| crate::artifacts::environment::is_true(&ProcessEnv, NO_LOCKS_ENV))
    }
}

/// Marks a crash point; with the `failpoints` feature, kills the process there when armed.
#[cfg(feature = "failpoints")]
pub(crate) fn hit(point: &str) {
    armed::hit(point);
}

/// Marks a crash point (a no-op without the `failpoints` feature).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn hit(_point: &str) {}

/// Whether blob locks are simulated no-ops (only with the `failpoints` feature).
#[cfg(feature = "failpoints")]
pub(crate) fn locks_simulated() -> bool {
    armed::locks_simulated()
}

/// Whether blob locks are simulated no-ops (never without the `failpoints` feature).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn locks_simulated() -> bool {
    false
}
