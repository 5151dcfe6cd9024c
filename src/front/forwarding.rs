//! The headers of the normalized request a worker gets: hop-by-hop headers
//! removed, and the forwarding headers (`X-Forwarded-*`, `X-Request-Id`,
//! the master's private `X-Ppm-*`) set by the master. Forwarding headers a
//! client sent are believed only when the client is a trusted proxy
//! (`--trusted-proxies`); from anyone else they are replaced by what the
//! master saw, so no client can spoof its address or scheme. What a
//! trusted proxy says is applied, so the app need not trust anyone: the
//! client's address becomes `REMOTE_ADDR`, its scheme `HTTPS`, and its
//! host and port `Host` and `SERVER_PORT` (`public_authority`).

use std::net::{IpAddr, SocketAddr};

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers whose meaning is limited to one connection (RFC 9110 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Names `Connection` lists matter only with a `Connection` header,
    // itself hop-by-hop: most responses have none, and need no removals.
    if !headers
        .keys()
        .any(|name| HOP_BY_HOP.contains(&name.as_str()))
    {
        return;
    }
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Whether a client-sent header is one the master sets itself.
fn is_reserved(name: &HeaderName) -> bool {
    let name = name.as_str();
    name.starts_with("x-ppm-")
        || name.starts_with("x-forwarded-")
        || name == "forwarded"
        || name == "x-real-ip"
        || name == "x-request-id"
}

/// The addresses whose forwarding headers are believed (parsed by config).
pub use crate::config::TrustedProxies;

/// What the master knows about one request's connection.
pub struct Origin<'a> {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The connection to the master itself is TLS.
    pub tls: bool,
    pub uri: &'a hyper::Uri,
}

/// What the worker is told about a request beyond the client's own
/// headers: the client's address, the server's, the scheme, the request
/// id (the client's, from a trusted proxy, else the generated one), and
/// the `Host` and forwarding headers the master sets.
pub struct Forwarding {
    pub request_id: String,
    /// `REMOTE_ADDR`: the last address on the way that is not a trusted proxy.
    pub remote_addr: IpAddr,
    /// `REMOTE_PORT`: the peer's port, 0 when the client is behind a proxy.
    pub remote_port: u16,
    pub server_addr: IpAddr,
    /// `SERVER_PORT`: the public port a trusted proxy named, else ppm's.
    pub server_port: u16,
    /// The client used HTTPS (to ppm, or to a trusted proxy that says so).
    pub https: bool,
    /// The `Host` the worker gets in place of the client's (the public one
    /// a trusted proxy named), or in addition when the client sent none.
    host: Option<String>,
    client_sent_host: bool,
    forwarded_for: Vec<u8>,
    forwarded_host: Option<String>,
}

impl Forwarding {
    /// Applies the forwarding rules to one request.
    pub fn new(
        client: &HeaderMap,
        origin: &Origin<'_>,
        trusted: &TrustedProxies,
        generated_id: String,
    ) -> Self {
        let from_proxy = trusted.contains(origin.peer.ip());
        let first = |name: &str| {
            from_proxy
                .then(|| client.get(name).and_then(|v| v.to_str().ok()))
                .flatten()
                .map(|v| v.split(',').next().unwrap_or_default().trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let proto = first("x-forwarded-proto");
        let https = match proto.as_deref() {
            Some("https") => true,
            Some("http") => false,
            _ => origin.tls,
        };
        let claims = Claims {
            proto: proto.is_some(),
            port: first("x-forwarded-port").and_then(|p| p.parse::<u16>().ok()),
            host: first("x-forwarded-host"),
        };
        let request_id = first("x-request-id")
            .filter(|id| id.len() <= 200 && id.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or(generated_id);
        let (chain, remote_addr) = address_chain(client, origin.peer.ip(), trusted);
        let remote_port = if remote_addr == origin.peer.ip() {
            origin.peer.port()
        } else {
            0
        };

        // A `Host` the client's `Connection` names is dropped with the
        // other hop-by-hop fields: the request is then one without.
        let client_sent_host = client.contains_key(header::HOST)
            && !connection_tokens(client).any(|named| named.eq_ignore_ascii_case("host"));
        let mut host = (!client_sent_host)
            .then(|| {
                origin
                    .uri
                    .authority()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| origin.local.to_string())
            })
            .filter(|h| HeaderValue::from_str(h).is_ok());
        let sent_host = || client.get(header::HOST).and_then(|h| h.to_str().ok());
        let public = if from_proxy {
            let current = match &host {
                Some(host) => Some(host.as_str()),
                None => client.get(header::HOST).and_then(|h| h.to_str().ok()),
            };
            let proto = if https { "https" } else { "http" };
            public_authority(current, &claims, proto, origin.local.port())
        } else {
            None
        };
        let server_port = match public {
            Some((authority, port)) => {
                if HeaderValue::from_str(&authority).is_ok() {
                    host = Some(authority);
                }
                port
            }
            None => origin.local.port(),
        };
        let forwarded_host = claims
            .host
            .or_else(|| host.clone())
            .or_else(|| sent_host().map(str::to_string));
        let mut forwarded_for = Vec::with_capacity(16);
        for (i, ip) in chain.iter().enumerate() {
            if i > 0 {
                forwarded_for.extend_from_slice(b", ");
            }
            crate::text::push_ip(&mut forwarded_for, *ip);
        }
        Forwarding {
            request_id,
            remote_addr,
            remote_port,
            server_addr: origin.local.ip(),
            server_port,
            https,
            host,
            client_sent_host,
            forwarded_for,
            forwarded_host,
        }
    }

    /// Gives `header` each header the worker gets, in order, with its
    /// lower-case name: the client's without the hop-by-hop ones, the
    /// ones the master sets itself (`X-Forwarded-*`, `X-Request-Id`,
    /// `Forwarded`, `X-Real-IP`, `X-Ppm-*`), `Content-Length` and
    /// `Expect`; then `Content-Length` (`body_len`), `Host` when the client
    /// sent none, and the forwarding headers.
    pub fn headers(
        &self,
        client: &HeaderMap,
        body_len: Option<usize>,
        mut header: impl FnMut(&str, &[u8]),
    ) {
        // The fields `Connection` names are dropped; most requests name
        // none but the hop-by-hop ones.
        let named: Vec<&str> = connection_tokens(client).collect();
        let mut host_given = false;
        for (name, value) in client {
            let text = name.as_str();
            if HOP_BY_HOP.contains(&text)
                || is_reserved(name)
                || name == header::CONTENT_LENGTH
                || name == header::EXPECT
                || named.iter().any(|n| n.eq_ignore_ascii_case(text))
            {
                continue;
            }
            if name == header::HOST {
                // A replaced `Host` is one value where the client's were.
                if let Some(host) = &self.host {
                    if !host_given {
                        header(text, host.as_bytes());
                    }
                    host_given = true;
                    continue;
                }
            }
            header(text, value.as_bytes());
        }
        let mut digits = [0; 20];
        if let Some(len) = body_len {
            header(
                "content-length",
                crate::text::decimal(&mut digits, len as u64),
            );
        }
        if !self.client_sent_host {
            if let Some(host) = &self.host {
                header("host", host.as_bytes());
            }
        }
        header("x-forwarded-for", &self.forwarded_for);
        header(
            "x-forwarded-proto",
            if self.https { b"https" } else { b"http" },
        );
        header(
            "x-forwarded-port",
            crate::text::decimal(&mut digits, u64::from(self.server_port)),
        );
        if let Some(host) = &self.forwarded_host {
            header("x-forwarded-host", host.as_bytes());
        }
        header("x-request-id", self.request_id.as_bytes());
    }
}

/// The field names the `Connection` header lists (hop-by-hop fields).
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// What a trusted proxy said about the public side of the request.
struct Claims {
    /// It sent `X-Forwarded-Proto` (a valid one decides the scheme).
    proto: bool,
    /// `X-Forwarded-Port`.
    port: Option<u16>,
    /// `X-Forwarded-Host` (the first of a list).
    host: Option<String>,
}

/// The `Host` and port the client used, as a trusted proxy tells them,
/// or None when it told nothing about them. The port is, first found:
/// `X-Forwarded-Port`; with `X-Forwarded-Host`, its port or the scheme's
/// default; `Host`'s port, unless it is `local_port` (the proxy addressed
/// ppm itself, as nginx's default `Host: $proxy_host` does); the scheme's
/// default (a TLS proxy on 443 sending `X-Forwarded-Proto: https`). The
/// name is `X-Forwarded-Host`'s, else `Host`'s. This is what Symfony's
/// `Request` reads from trusted proxies (`getPort`, `getHost`), applied
/// here so that the app need not trust anyone: `Host` and `SERVER_PORT`
/// then say what the client used, and URLs the app builds carry no
/// internal port.
fn public_authority(
    host: Option<&str>,
    forwarded: &Claims,
    proto: &str,
    local_port: u16,
) -> Option<(String, u16)> {
    use hyper::http::uri::Authority;
    let forwarded_host = forwarded
        .host
        .as_deref()
        .and_then(|h| Authority::try_from(h).ok())
        .filter(|a| !a.as_str().contains('@'));
    if forwarded.port.is_none() && forwarded_host.is_none() && !forwarded.proto {
        return None;
    }
    let host = match forwarded_host {
        Some(authority) => authority,
        None => Authority::try_from(host?).ok()?,
    };
    let default_port = if proto == "https" { 443 } else { 80 };
    let port = forwarded
        .port
        .or_else(|| host.port_u16().filter(|&port| port != local_port))
        .unwrap_or(default_port);
    let authority = if port == default_port {
        host.host().to_string()
    } else {
        format!("{}:{port}", host.host())
    };
    Some((authority, port))
}

/// The chain of addresses the request passed, client first, this
/// connection's peer last, and the client's address: the last address in
/// the chain that is not a trusted proxy. `X-Forwarded-For` is read only
/// when the peer is a trusted proxy.
fn address_chain(
    client: &HeaderMap,
    peer: IpAddr,
    trusted: &TrustedProxies,
) -> (Vec<IpAddr>, IpAddr) {
    let mut chain: Vec<IpAddr> = Vec::new();
    if trusted.contains(peer) {
        for value in client
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            chain.extend(value.split(',').filter_map(|a| parse_ip(a.trim())));
        }
    }
    chain.push(peer);
    let client_ip = chain
        .iter()
        .rev()
        .find(|ip| !trusted.contains(**ip))
        .or(chain.first())
        .copied()
        .unwrap_or(peer);
    (chain, client_ip)
}

/// The client's address as the app sees it (`REMOTE_ADDR`), for the access log.
pub fn client_ip(client: &HeaderMap, peer: IpAddr, trusted: &TrustedProxies) -> IpAddr {
    address_chain(client, peer, trusted).1
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| text.trim_start_matches('[').split(']').next()?.parse().ok())
}

#[cfg(test)]
#[path = "forwarding_tests.rs"]
mod tests;
