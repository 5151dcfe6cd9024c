//! The master's connection to one worker, per runtime.

use hyper::client::conn::http1::SendRequest;

use crate::native::conn::FrameConn;
use crate::spool::WorkerBody;

/// A connection to one worker, lent with its `Lease` to one request at a
/// time.
pub enum WorkerConn {
    /// HTTP/1.1 over the private socket of a php-cgi worker.
    Http(SendRequest<WorkerBody>),
    /// The frame socket of a native worker.
    Native(FrameConn),
}

impl WorkerConn {
    /// Whether the connection can carry no further request.
    pub fn is_closed(&self) -> bool {
        match self {
            WorkerConn::Http(sender) => sender.is_closed(),
            WorkerConn::Native(conn) => conn.is_closed(),
        }
    }

    /// Whether the worker reports the end of each request on another
    /// channel (php-cgi's `request_done`), so that it is idle only once
    /// that report came. A native worker's exchange reads its `Ready`
    /// itself: when the lease comes back, the worker is idle.
    pub fn reports_done_apart(&self) -> bool {
        matches!(self, WorkerConn::Http(_))
    }
}
