//! The master's private run directory (`ppm-*` in the temporary
//! directory: the PHP worker script and bridges), and the clean-up of those
//! left by masters that were killed.
//!
//! Ownership is a lock, not a pid: each directory holds `master.lock`,
//! which its master keeps `flock`ed for as long as it runs. The kernel
//! drops the lock when the master dies, however it dies, so a directory
//! whose lock can be taken belongs to nobody; a pid could have been
//! reused. The lock file is locked under a temporary name and renamed
//! into place, so a directory is never seen with an unlocked
//! `master.lock` while its master lives. Directories without the file
//! (being created, or from another version of ppm) are left alone.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::Error;

/// The prefix of run directories in the temporary directory.
const PREFIX: &str = "ppm-";
/// The lock file its master holds.
pub(crate) const LOCK: &str = "master.lock";

/// A run directory this process owns; dropping it removes it.
pub struct RunDir {
    // Field order: the directory goes before its lock is released.
    dir: tempfile::TempDir,
    _lock: Flock<File>,
}

impl RunDir {
    /// Creates a locked run directory (mode 0700) in the temporary
    /// directory, after removing those of dead masters.
    pub fn create() -> Result<RunDir, Error> {
        remove_stale(&std::env::temp_dir());
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir()
            .map_err(Error::RunDir)?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(Error::RunDir)?;
        let staging = dir.path().join(format!("{LOCK}.new"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&staging)
            .map_err(Error::RunDir)?;
        let mut lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| Error::RunDir(errno.into()))?;
        // For people looking: which master this is.
        writeln!(*lock, "{}", std::process::id()).map_err(Error::RunDir)?;
        std::fs::rename(&staging, dir.path().join(LOCK)).map_err(Error::RunDir)?;
        Ok(RunDir { dir, _lock: lock })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes the run directories in `parent` whose master is gone (their
/// lock is free). Best effort: what cannot be removed is logged.
pub fn remove_stale(parent: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return removed;
    };
    let uid = nix::unistd::geteuid().as_raw();
    for entry in entries.flatten() {
        let path = entry.path();
        // A directory handed to the workers' user (`--user`) is still
        // ours when its lock file is.
        let owned = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.uid() == uid);
        let ours = entry.file_name().to_string_lossy().starts_with(PREFIX)
            && std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir())
            && (owned(&path)
                || std::fs::symlink_metadata(path.join(LOCK))
                    .is_ok_and(|m| m.is_file() && m.uid() == uid));
        if !ours {
            continue;
        }
        let Ok(file) = File::open(path.join(LOCK)) else {
            continue;
        };
        let Ok(_lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            continue; // its master is running
        };
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(
                    "removed {}, the run directory of a master that is gone",
                    path.display()
                );
                removed.push(path);
            }
            // Another new master removed it first.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => tracing::warn!("cannot remove stale {}: {err}", path.display()),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_directories_with_a_free_lock_are_removed() {
        let parent = tempfile::tempdir().unwrap();
        let dead = parent.path().join("ppm-dead");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(LOCK), "1\n").unwrap();
        let live = parent.path().join("ppm-live");
        std::fs::create_dir(&live).unwrap();
        std::fs::write(live.join(LOCK), "2\n").unwrap();
        let _held = Flock::lock(
            File::open(live.join(LOCK)).unwrap(),
            FlockArg::LockExclusiveNonblock,
        )
        .unwrap();
        let unknown = parent.path().join("ppm-unknown");
        std::fs::create_dir(&unknown).unwrap();
        let other = parent.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join(LOCK), "3\n").unwrap();

        assert_eq!(remove_stale(parent.path()), vec![dead.clone()]);
        assert!(!dead.exists());
        assert!(live.exists() && unknown.exists() && other.exists());
    }

    #[test]
    fn a_live_run_directory_survives_the_clean_up_and_goes_at_drop() {
        let run = RunDir::create().unwrap();
        let path = run.path().to_path_buf();
        assert!(path.join(LOCK).is_file());
        let parent = path.parent().unwrap().to_path_buf();
        assert!(!remove_stale(&parent).contains(&path));
        assert!(path.exists());
        drop(run);
        assert!(!path.exists());
    }
}
