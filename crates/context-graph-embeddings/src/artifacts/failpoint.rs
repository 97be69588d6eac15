//! Crash points for tests: `CG_MODELS_CRASH_AT=<point>[:<n>]` makes the process kill itself
//! with SIGKILL the `n`-th time (default the first) it reaches `<point>`, so crash-safety tests
//! can stop a download exactly between two steps (mid-body, around the rename, around the
//! snapshot link and stamp writes). Without the variable this is one relaxed atomic load.
//!
//! Points: `download.chunk` (after each chunk is written), `download.before_rename`,
//! `download.after_rename`, `snapshot.before_link`, `snapshot.after_link`,
//! `ref.before_write`, `stamp.before_write`, `stamp.after_write`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The variable that arms a crash point.
pub const CRASH_AT_ENV: &str = "CG_MODELS_CRASH_AT";

struct Armed {
    point: String,
    nth: u64,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var(CRASH_AT_ENV).ok()?;
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

/// Marks a point; kills the process there when armed for it.
pub fn hit(point: &str) {
    if let Some(armed) = armed() {
        if armed.point == point && armed.hits.fetch_add(1, Ordering::SeqCst) + 1 == armed.nth {
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
        }
    }
}
