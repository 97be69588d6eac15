//! A real read-only mount (`mount --bind` + `remount,bind,ro`, as a Kubernetes volume
//! mounted `readOnly: true`) and a listing of a folder that proves nothing was written. Included
//! by the test binaries that need them (`it`, `python_compat.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A read-only bind mount of a folder onto itself; unmounted on drop, also when the test
/// fails. Making it fails the test (it is never skipped): the tests run as root, as in CI.
pub(crate) struct ReadOnlyMount {
    dir: PathBuf,
}

impl ReadOnlyMount {
    pub(crate) fn new(dir: &Path) -> ReadOnlyMount {
        let bind = Command::new("mount")
            .arg("--bind")
            .arg(dir)
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            bind.status.success(),
            "cannot bind-mount {} (these tests need root and mount(8)): {}",
            dir.display(),
            String::from_utf8_lossy(&bind.stderr)
        );
        let guard = ReadOnlyMount {
            dir: dir.to_path_buf(),
        };
        let remount = Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            remount.status.success(),
            "cannot remount {} read-only: {}",
            dir.display(),
            String::from_utf8_lossy(&remount.stderr)
        );
        let probe = std::fs::write(dir.join(".probe"), b"x").expect_err("the mount is read-only");
        assert_eq!(probe.kind(), std::io::ErrorKind::ReadOnlyFilesystem);
        guard
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let plain = Command::new("umount").arg(&self.dir).status();
        if !plain.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Every regular file and link under `dir`, with its size and modification time, to prove
/// nothing was written.
pub(crate) fn tree(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let meta = entry.path().symlink_metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                out.push((entry.path(), meta.len(), meta.modified().unwrap()));
            }
        }
    }
    out.sort();
    out
}
