//! The body type of every response the master sends, shared by the front
//! door (which writes it) and the proxy (which builds it), so that neither
//! imports the other for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;

/// The error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response the master sends.
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Work a response leaves behind for its connection: the worker's side of
/// an exchange that goes on after the response is known (the worker's
/// clean-up after `End`, up to its `Ready`). It travels in the response's
/// extensions. The HTTP/1 connection that writes the response finishes it
/// itself while it waits for the next request, so that no other task is
/// on a request's way; whoever drops it unfinished (the client left, the
/// next request came first, HTTP/2, FastCGI) hands it to a task of its
/// own, so a worker is never left half-way through a request.
#[derive(Clone)]
pub struct Tail(Arc<Mutex<Option<Work>>>);

type Work = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Tail {
    /// Wraps `work`, which has already been polled at least once.
    pub fn new(work: Work) -> Self {
        Tail(Arc::new(Mutex::new(Some(work))))
    }

    fn poll_work(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut work = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match work.as_mut() {
            Some(running) => {
                let done = running.as_mut().poll(cx);
                if done.is_ready() {
                    *work = None;
                }
                done
            }
            None => Poll::Ready(()),
        }
    }
}

impl Future for Tail {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_work(cx)
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        // The last clone hands unfinished work to a task of its own.
        if Arc::strong_count(&self.0) > 1 {
            return;
        }
        let work = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let (Some(work), Ok(runtime)) = (work, tokio::runtime::Handle::try_current()) {
            runtime.spawn(work);
        }
    }
}
