//! The library's error type. Each variant carries what the person running
//! ppm needs to fix the problem; `main` prints it as one line.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can stop a ppm command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listening socket could not be bound (usually: port in use).
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A FastCGI Unix socket could not be made.
    #[error("cannot listen on {addr} (FastCGI): {message}")]
    Listen { addr: String, message: String },
    /// An option has a value ppm cannot use.
    #[error("invalid option --{option}: {message}")]
    InvalidOption {
        option: &'static str,
        message: String,
    },
    /// The configuration file is unreadable or has a bad key or value.
    #[error("{}: {message}", file.display())]
    Config { file: PathBuf, message: String },
    /// The pid file cannot be created or is held by another master.
    #[error("pid file {}: {message}", path.display())]
    PidFile { path: PathBuf, message: String },
    /// The command line could not be parsed (clap's full message).
    #[error("{0}")]
    Usage(String),
    /// The PHP binary to run workers with cannot be found or run.
    #[error("{0}")]
    Php(String),
    /// The application directory is missing.
    #[error("application directory {0} does not exist")]
    AppDir(PathBuf),
    /// The run directory (the PHP worker files) failed.
    #[error("cannot prepare the run directory: {0}")]
    RunDir(std::io::Error),
    /// A worker could not be started.
    #[error("cannot start a PHP worker: {0}")]
    Spawn(std::io::Error),
    /// A worker failed to boot; the text is PHP's own error message.
    #[error("PHP worker failed to boot: {0}")]
    Bootstrap(String),
    /// `ppm start` gave up: no worker booted within `--bootstrap-timeout`.
    #[error("no PHP worker became ready within {0:?} (--bootstrap-timeout); PHP's error is logged above")]
    NeverBooted(std::time::Duration),
    /// Talking to a running master's control plane failed.
    #[error("control plane at {addr}: {message}")]
    Control { addr: String, message: String },
    /// A problem of one pool of `ppm.json`'s `pools`.
    #[error("pool \"{pool}\": {source}")]
    Pool {
        pool: String,
        #[source]
        source: Box<Error>,
    },
    /// Several configuration problems, found in one pass.
    #[error("{} configuration errors:\n  {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Several(Vec<Error>),
    /// Any other I/O failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Ok for no errors, the error itself for one, `Several` for more.
    pub fn from_list(mut errors: Vec<Error>) -> Result<(), Error> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Several(errors)),
        }
    }

    /// The errors this one stands for: itself, or those of `Several`.
    pub fn into_list(self) -> Vec<Error> {
        match self {
            Error::Several(errors) => errors,
            other => vec![other],
        }
    }
}
