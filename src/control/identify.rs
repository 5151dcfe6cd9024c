//! How `ppm status|stop|restart|reload` make sure they talk to a ppm
//! control plane before they send anything that changes state.
//!
//! PHP-PM users type the balancer port (`ppm stop 8080`); a `POST /stop`
//! there would reach their application. So the CLI first sends one `GET`
//! for [`PROBE_PATH`]: the control plane answers it, and every control
//! plane answer carries [`CONTROL_HEADER`]. The path is also the
//! balancer's default health path, which the master answers itself on the
//! balancer and slot ports (with [`LISTENER_HEADER`]), so by default the
//! probe never reaches PHP either.

use hyper::header::{HeaderName, HeaderValue};

use crate::control::ControlClient;
use crate::Error;

/// The path the CLI probes; answered by the control plane like `/health`.
pub const PROBE_PATH: &str = "/_ppm/health";

/// Marks every control plane response; its value is ppm's version.
pub const CONTROL_HEADER: HeaderName = HeaderName::from_static("x-ppm-control");

/// Marks the master's own health answers on the balancer (`balancer`) and
/// slot ports (`slot`).
pub const LISTENER_HEADER: HeaderName = HeaderName::from_static("x-ppm-listener");

/// Adds [`CONTROL_HEADER`] to a control plane response.
pub async fn mark_control(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(
        CONTROL_HEADER,
        HeaderValue::from_static(env!("CARGO_PKG_VERSION")),
    );
    response
}

/// Where the control plane should be, for the hint when the given port is
/// not it.
#[derive(Debug, Clone)]
pub struct Expected {
    /// The control port from the configuration file, else the default.
    pub control_port: u16,
    /// Where `control_port` came from ("./ppm.json", "the default").
    pub source: String,
    /// The balancer port from the configuration file, else the default.
    pub balancer_port: u16,
}

/// Fails unless `client.addr` answers as a ppm control plane; the error
/// names the control port. Sends only a `GET` for [`PROBE_PATH`].
pub async fn ensure_control_plane(
    client: &ControlClient,
    expected: &Expected,
) -> Result<(), Error> {
    let (code, headers, _) = crate::control::call(&client.addr, None, "GET", PROBE_PATH).await?;
    if headers.contains_key(CONTROL_HEADER) {
        return Ok(());
    }
    let port = client
        .addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok());
    let what = match headers.get(LISTENER_HEADER).map(HeaderValue::as_bytes) {
        Some(b"balancer") => "is ppm's balancer port (the application), not its control plane".to_string(),
        Some(b"slot") => "is a ppm worker slot port (the application), not its control plane".to_string(),
        _ if port == Some(expected.balancer_port) => format!(
            "is not a ppm control plane (GET {PROBE_PATH} answered {code}); it looks like the balancer port"
        ),
        _ => format!("is not a ppm control plane (GET {PROBE_PATH} answered {code})"),
    };
    let hint = if port == Some(expected.control_port) {
        String::new()
    } else {
        format!(
            "; the control port is {} ({})",
            expected.control_port, expected.source
        )
    };
    Err(Error::Control {
        addr: client.addr.clone(),
        message: format!("{what}; nothing that changes state was sent to it{hint}"),
    })
}
