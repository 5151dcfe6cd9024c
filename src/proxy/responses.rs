//! The master's own answers (errors, health, refusals) and the bodies of
//! the responses it relays.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::body::{BoxError, ProxyBody};
use crate::workers::pool::{ExitReason, Lease};

/// Responses up to this size are read whole from the worker before the
/// client gets them, so the worker is free whatever the client's speed.
pub const RESPONSE_BUFFER: usize = 1024 * 1024;

/// A chunk of a streamed response, with the share of `RESPONSE_BUFFER` it
/// holds until the client has taken it.
pub(crate) type Chunk = Result<(Bytes, OwnedSemaphorePermit), BoxError>;

/// The client's side of a pumped response.
pub(crate) struct PumpedBody {
    pub(crate) rx: mpsc::UnboundedReceiver<Chunk>,
}

impl Body for PumpedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.rx.poll_recv(cx) {
            // The permit is dropped here: the pump may read that much more.
            Poll::Ready(Some(Ok((data, _permit)))) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

pub(crate) fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A short plain-text response from the master itself.
pub fn error_response(status: StatusCode, text: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut response = Response::new(full(text.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The request passed `--max-execution-time`: the worker is killed and
/// replaced, the client gets 504.
pub(crate) fn timed_out(lease: &Lease, what: &str) -> Response<ProxyBody> {
    tracing::warn!(
        "[slot {}] {what} passed --max-execution-time; killing the worker",
        lease.slot()
    );
    lease.kill(ExitReason::Timeout);
    error_response(
        StatusCode::GATEWAY_TIMEOUT,
        "The PHP worker did not answer within the maximum execution time\n",
    )
}
