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
    /// Creates (or takes over a stale) pid file holding this process's pid;
    /// its directory is created if missing (PHP-PM's `.ppm/ppm.pid`).
    pub fn create(path: &Path) -> Result<Self, Error> {
        let fail = |message: String| Error::PidFile {
            path: path.to_path_buf(),
            message,
        };
        let mut lock = lock(path)?;
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

/// What `ppm start --check` asks: could `create` succeed? Leaves no file
/// behind that was not there.
pub fn check(path: &Path) -> Result<(), Error> {
    // A missing directory is left to `create`; here it is enough that the
    // nearest existing ancestor is a directory ppm may create it in.
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        let existing = dir
            .ancestors()
            .find(|a| a.exists())
            .unwrap_or(Path::new("/"));
        let usable = existing.is_dir()
            && nix::unistd::access(
                existing,
                nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
            )
            .is_ok();
        if !usable {
            return Err(Error::PidFile {
                path: path.to_path_buf(),
                message: format!(
                    "cannot create its directory {}: {} is not a writable directory",
                    dir.display(),
                    existing.display()
                ),
            });
        }
        return Ok(());
    }
    let existed = path.exists();
    let held = lock(path)?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    drop(held);
    Ok(())
}

/// Opens (creating it and its directory) and locks the pid file.
fn lock(path: &Path) -> Result<Flock<File>, Error> {
    let fail = |message: String| Error::PidFile {
        path: path.to_path_buf(),
        message,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            fail(format!(
                "cannot create its directory {}: {e}",
                dir.display()
            ))
        })?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| fail(format!("cannot open it: {e}")))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((mut file, _)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            Err(fail(format!(
                "another ppm master (pid {}) holds it",
                holder.trim()
            )))
        }
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

    #[test]
    fn its_directory_is_created_and_check_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".ppm/ppm.pid");
        check(&path).unwrap();
        assert!(!path.parent().unwrap().exists(), "check created nothing");
        let held = PidFile::create(&path).unwrap();
        let err = check(&path).unwrap_err().to_string();
        assert!(err.contains("another ppm master"), "{err}");
        drop(held);
        let blocked = dir.path().join("file");
        std::fs::write(&blocked, "").unwrap();
        let err = check(&blocked.join("ppm.pid")).unwrap_err().to_string();
        assert!(err.contains("cannot create its directory"), "{err}");
    }
}
