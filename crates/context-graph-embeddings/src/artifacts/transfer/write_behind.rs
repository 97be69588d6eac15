//! Write-behind: the disk starts writing a download while it is still arriving. A blob is
//! fsynced before it is renamed into place (`persist`), and without this the kernel would hold
//! the whole file in dirty pages until that fsync, which then writes all of it at once, after
//! the network is done: on a disk slower than the link, the download's time is network time
//! plus disk time instead of the larger of the two.
//!
//! Every [`WRITE_BEHIND_BYTES`] written, a writer thread asks for an `fdatasync` on a thread of
//! its own (a clone of the file handle), so the writer never waits for the disk; at most one
//! is in flight per file, and [`WriteBehind::finish`] waits for it. A failed flush is the
//! writer's error: the clone shares the open file description, so a write-back error it was
//! told about would not be told again to the fsync before the rename. Only safe calls (no
//! `sync_file_range`, which would need `unsafe`).

use std::fs::File;
use std::io;
use std::thread::JoinHandle;

/// Bytes written between two write-behind flushes of one file.
pub(crate) const WRITE_BEHIND_BYTES: u64 = 32 * 1024 * 1024;

/// The write-behind state of one file being written.
#[derive(Debug)]
pub(crate) struct WriteBehind {
    /// A second handle to the file (`None`: it could not be cloned; no write-behind then).
    file: Option<File>,
    unflushed: u64,
    in_flight: Option<JoinHandle<io::Result<()>>>,
}

impl WriteBehind {
    /// Write-behind for `file`.
    pub(crate) fn new(file: &File) -> Self {
        WriteBehind {
            file: file.try_clone().ok(),
            unflushed: 0,
            in_flight: None,
        }
    }

    /// `bytes` more were written; starts a flush when enough are waiting and none runs. An
    /// error is that of the last flush, which failed.
    pub(crate) fn wrote(&mut self, bytes: u64) -> io::Result<()> {
        self.unflushed += bytes;
        if self.unflushed < WRITE_BEHIND_BYTES
            || self.in_flight.as_ref().is_some_and(|f| !f.is_finished())
        {
            return Ok(());
        }
        self.finish()?;
        let Some(file) = self.file.as_ref().and_then(|f| f.try_clone().ok()) else {
            return Ok(());
        };
        self.unflushed = 0;
        // No thread (a process at its limit): the fsync before the rename does it all.
        self.in_flight = std::thread::Builder::new()
            .name("cg-write-behind".to_owned())
            .spawn(move || file.sync_data())
            .ok();
        Ok(())
    }

    /// Waits for the flush in flight, if any; its error, if it failed.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        match self.in_flight.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(error))) => Err(error),
            Some(Err(_)) => Err(io::Error::other("the write-behind thread panicked")),
        }
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        // A writer that stopped early (an error, a cancelled download) still waits, so no
        // flush outlives the partial file's owner; the partial is checked again on resume.
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn flushes_start_only_after_enough_bytes_and_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = File::create(dir.path().join("blob")).unwrap();
        let mut behind = WriteBehind::new(&file);
        file.write_all(b"abc").unwrap();
        behind.wrote(3).unwrap();
        assert!(behind.in_flight.is_none(), "3 bytes start no flush");
        behind.wrote(WRITE_BEHIND_BYTES).unwrap();
        assert!(behind.in_flight.is_some(), "a threshold's worth starts one");
        assert_eq!(behind.unflushed, 0);
        behind.finish().unwrap();
        assert!(behind.in_flight.is_none());
    }
}
