//! What a native worker's frame connection and exchanges pass on to its
//! slot task.

use super::frames::Outcome;

/// What a worker's exchanges and frame connection pass on to its slot.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    /// The PHP backtrace of the running request, asked for with SIGUSR1.
    Backtrace { trace: String },
    /// Debug mode: files the application loaded since the last report.
    IncludedFiles { files: Vec<std::path::PathBuf> },
    /// The worker finished a request (it is idle again already), with
    /// PHP's memory figures after it: sent when it reached a recycle limit
    /// and otherwise at most every quarter second (`FrameConn::finished`).
    Finished { memory: u64, peak_memory: u64 },
    /// The worker's script restarted in-process after a request ended
    /// this way (`exit()`, a fatal error, PHP's timeout, out of memory):
    /// counted like a worker restart.
    ScriptRestarted { outcome: Outcome },
    /// A request ended with an uncaught exception (the app's handler or
    /// PHP's 500 answered; the script goes on).
    UncaughtException,
}
