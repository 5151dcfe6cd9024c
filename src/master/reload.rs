//! Debug mode: roll the workers surge-first when the application's code
//! changes.
//!
//! Workers report the files they have included; the master watches those
//! files (through their directories, with inotify via the `notify` crate,
//! never by polling), the application's `config/` directory and its `.env`
//! files. Cache and log directories are ignored, so a framework writing its
//! container cache cannot trigger a loop. A burst of changes (a `git
//! checkout`) is coalesced into one rolling restart. A change that breaks
//! the bootstrap stops that roll with the old workers still serving; the
//! next change starts a new roll, so fixing the file recovers by itself.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::workers::rolling::{RestartState, Restarts};

/// Quiet time after the last change before the workers roll.
const SETTLE: Duration = Duration::from_millis(300);
/// Longest a steady stream of changes may delay the roll.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Directory names whose contents never trigger a reload.
const IGNORED: [&str; 8] = [
    "cache",
    "log",
    "logs",
    "storage",
    ".git",
    "node_modules",
    "sessions",
    "tmp",
];

/// Watches the application and rolls the workers when its code changes.
/// Included files arrive on `included`, as workers report them.
pub async fn watch(
    app_dir: PathBuf,
    restarts: Arc<Restarts>,
    mut included: mpsc::UnboundedReceiver<Vec<PathBuf>>,
) {
    let (tx, mut changes) = mpsc::unbounded_channel::<PathBuf>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(
            event.kind,
            EventKind::Access(_) | EventKind::Other | EventKind::Any
        ) {
            return;
        }
        for path in event.paths {
            let _ = tx.send(path);
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(err) => {
            tracing::error!("debug reload is off: cannot watch files ({err})");
            return;
        }
    };
    let config_dir = app_dir.join("config");
    if config_dir.is_dir() {
        if let Err(err) = watcher.watch(&config_dir, RecursiveMode::Recursive) {
            tracing::warn!("cannot watch {}: {err}", config_dir.display());
        }
    }
    let mut watched_dirs: HashSet<PathBuf> = HashSet::new();
    if watcher.watch(&app_dir, RecursiveMode::NonRecursive).is_ok() {
        watched_dirs.insert(app_dir.clone());
    }
    let mut files: HashSet<PathBuf> = HashSet::new();
    tracing::info!("debug mode: watching the application's files for changes");

    let mut pending: Vec<PathBuf> = Vec::new();
    let mut first_change: Option<Instant> = None;
    let mut quiet_until: Option<Instant> = None;
    loop {
        let deadline = quiet_until.map(|q| q.min(first_change.unwrap_or(q) + MAX_DELAY));
        tokio::select! {
            reported = included.recv() => {
                let Some(reported) = reported else { return };
                let count = reported.len();
                for file in reported {
                    if ignored(&file, &app_dir) || !files.insert(file.clone()) {
                        continue;
                    }
                    if let Some(dir) = file.parent() {
                        if !watched_dirs.contains(dir) && watcher.watch(dir, RecursiveMode::NonRecursive).is_ok() {
                            watched_dirs.insert(dir.to_path_buf());
                        }
                    }
                }
                // Logged once they are watched: the tests wait for this line.
                tracing::debug!("watching {count} more included files");
            }
            changed = changes.recv() => {
                let Some(path) = changed else { return };
                tracing::debug!("changed: {}", path.display());
                if relevant(&path, &files, &config_dir, &app_dir) {
                    let now = Instant::now();
                    first_change.get_or_insert(now);
                    quiet_until = Some(now + SETTLE);
                    if pending.len() < 5 && !pending.contains(&path) {
                        pending.push(path);
                    }
                }
            }
            _ = sleep_until(deadline) => {
                first_change = None;
                quiet_until = None;
                let changed: Vec<String> = pending.drain(..).map(|p| p.display().to_string()).collect();
                // Let a running roll finish: its workers may predate the change.
                while restarts.last().is_some_and(|r| r.state == RestartState::Running) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tracing::info!("files changed ({}); rolling the workers", changed.join(", "));
                restarts.start(None);
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Whether a path is in a cache, log or other never-code directory (below
/// the application directory, when it is inside it).
fn ignored(path: &Path, app_dir: &Path) -> bool {
    let inside = path.strip_prefix(app_dir).unwrap_or(path);
    inside.components().any(|c| match c {
        Component::Normal(name) => name.to_str().is_some_and(|n| IGNORED.contains(&n)),
        _ => false,
    })
}

/// Whether a changed path is code the workers run.
fn relevant(path: &Path, files: &HashSet<PathBuf>, config_dir: &Path, app_dir: &Path) -> bool {
    if ignored(path, app_dir) {
        return false;
    }
    files.contains(path)
        || path.starts_with(config_dir)
        || (path.parent() == Some(app_dir)
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".env")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_and_log_directories_are_ignored() {
        let app = Path::new("/srv/cache/app");
        assert!(ignored(
            Path::new("/srv/cache/app/var/cache/prod/Container.php"),
            app
        ));
        assert!(ignored(
            Path::new("/srv/cache/app/storage/framework/views/x.php"),
            app
        ));
        assert!(!ignored(
            Path::new("/srv/cache/app/src/Controller/Home.php"),
            app
        ));
    }

    #[test]
    fn only_included_files_config_and_env_are_relevant() {
        let app = Path::new("/app");
        let files: HashSet<PathBuf> = [PathBuf::from("/app/src/A.php")].into();
        let config = app.join("config");
        assert!(relevant(Path::new("/app/src/A.php"), &files, &config, app));
        assert!(relevant(
            Path::new("/app/config/packages/x.php"),
            &files,
            &config,
            app
        ));
        assert!(relevant(Path::new("/app/.env.local"), &files, &config, app));
        assert!(!relevant(Path::new("/app/src/B.php"), &files, &config, app));
        assert!(!relevant(
            Path::new("/app/config/cache/x.php"),
            &files,
            &config,
            app
        ));
    }
}
