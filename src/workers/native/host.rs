//! Hosting PHP in this process: checks, settings and the call into the
//! shim, shared by `ppm php-worker` and `ppm worker`.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use super::ffi::{self, RunConfig};
use super::io::{Link, WorkerIo};
use super::script::DocRoot;
use crate::config::AppOptions;
use crate::Error;

/// The native runtime's entry script beside the installed runtime files.
pub fn install_entry(run_dir: &Path) -> Result<PathBuf, Error> {
    let worker = crate::workers::runtime::install(run_dir).map_err(Error::RunDir)?;
    Ok(worker.with_file_name("native.php"))
}

/// Runs the application's worker script on this thread, answering the
/// requests that arrive on `link`, until it says stop. Returns the process
/// exit status: 0 after a stop, 1 when the application could not boot
/// (the error went to the link).
pub fn run(link: Box<dyn Link>, app: &AppOptions, entry: &Path, slot: usize) -> Result<i32, Error> {
    let app_dir = crate::master::app_dir(app)?;
    std::env::set_current_dir(&app_dir)?;
    let config = serde_json::json!({
        "bridge": app.bridge,
        "bootstrap": app.bootstrap,
        "app_dir": app_dir,
        "app_env": app.app_env,
        "debug": app.debug,
        "slot": slot,
    });
    let mut ini = String::new();
    for setting in &app.php_ini {
        if !setting.contains('=') || setting.contains(['\n', '\0']) {
            return Err(Error::InvalidOption {
                option: "php-ini",
                message: format!("{setting:?} is not KEY=VALUE on one line"),
            });
        }
        ini.push_str(setting);
        ini.push('\n');
    }
    let c = |text: String| {
        CString::new(text).map_err(|_| Error::Php("a setting contains a NUL byte".into()))
    };
    let run = RunConfig {
        script: c(entry.to_string_lossy().into_owned())?,
        ini_entries: c(ini)?,
        ini_path: None,
        config_json: c(config.to_string())?,
        classic: app.runs_scripts(),
    };
    std::hint::black_box(ffi::keep_callbacks());
    let mut io = WorkerIo::new(link);
    if app.runs_scripts() {
        let dir = app.document_root(&app_dir);
        let root = DocRoot::new(&dir).map_err(|err| Error::InvalidOption {
            option: "document-root",
            message: format!("{}: {err}", dir.display()),
        })?;
        io.run_scripts(root);
    } else {
        // A classic script's files are compiled afresh (opcache checks
        // their times) at every request: nothing to reload for.
        io.report_included(app.debug);
    }
    Ok(ffi::run(io, &run))
}
