//! `--pidfile`: the master's pid, written at start, locked so that a
//! second master with the same file refuses to start, removed at exit.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::Error;

/// A locked pid file; dropping it removes the file and the lock.
pub struct PidFile {
    path: PathBuf,
    _lock: Flock<File>,
}

impl PidFile {
    /// Creates (or takes over a stale) pid file holding this process's pid.
    pub fn create(path: &Path) -> Result<Self, Error> {
        let fail = |message: String| Error::PidFile {
            path: path.to_path_buf(),
            message,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| fail(format!("cannot open it: {e}")))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, _)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(fail(format!(
                    "another ppm master (pid {}) holds it",
                    holder.trim()
                )));
            }
        };
        lock.set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| writeln!(*lock, "{}", std::process::id()))
            .and_then(|()| lock.sync_all())
            .map_err(|e| fail(format!("cannot write it: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Removed while still locked, so no second master can slip in
        // between and have its fresh file deleted.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_the_file_goes_at_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ppm.pid");
        let first = PidFile::create(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        let err = PidFile::create(&path).err().unwrap().to_string();
        assert!(err.contains("another ppm master"), "{err}");
        drop(first);
        assert!(!path.exists());
        assert!(PidFile::create(&path).is_ok(), "a stale file is taken over");
    }
}
