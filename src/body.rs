//! The body type of every response the master sends, shared by the front
//! door (which writes it) and the proxy (which builds it), so that neither
//! imports the other for it.

use bytes::Bytes;

/// The error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response the master sends.
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
