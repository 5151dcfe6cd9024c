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
use ipnet::IpNet;

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
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
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

/// The addresses whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses addresses and CIDRs (`10.0.0.0/8`, `127.0.0.1`, `::1`).
    pub fn parse(items: &[String]) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in items
            .iter()
            .flat_map(|i| i.split(','))
            .map(str::trim)
            .filter(|i| !i.is_empty())
        {
            let net = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{item:?} is not an IP address or CIDR"))?;
            nets.push(net);
        }
        Ok(Self(nets))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// What the master knows about one request's connection.
pub struct Origin<'a> {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The connection to the master itself is TLS.
    pub tls: bool,
    pub uri: &'a hyper::Uri,
}

/// The worker's request headers, and the request id (the client's, from a
/// trusted proxy, else `generated_id`).
pub fn worker_headers(
    client: &HeaderMap,
    origin: &Origin<'_>,
    body_len: Option<usize>,
    trusted: &TrustedProxies,
    generated_id: String,
) -> (HeaderMap, String) {
    let from_proxy = trusted.contains(origin.peer.ip());
    let first = |name: &str| {
        from_proxy
            .then(|| client.get(name).and_then(|v| v.to_str().ok()))
            .flatten()
            .map(|v| v.split(',').next().unwrap_or_default().trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let proto = first("x-forwarded-proto")
        .filter(|p| p == "http" || p == "https")
        .unwrap_or_else(|| if origin.tls { "https" } else { "http" }.to_string());
    let forwarded = Forwarded {
        proto: first("x-forwarded-proto").is_some(),
        port: first("x-forwarded-port").and_then(|p| p.parse::<u16>().ok()),
        host: first("x-forwarded-host"),
    };
    let request_id = first("x-request-id")
        .filter(|id| id.len() <= 200 && id.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or(generated_id);
    let (chain, client_ip) = address_chain(client, origin.peer.ip(), trusted);
    let client_port = if client_ip == origin.peer.ip() {
        origin.peer.port()
    } else {
        0
    };

    let raw_target = origin
        .uri
        .path_and_query()
        .and_then(|p| crate::target::raw_for(client, p.as_str()));
    let mut headers = client.clone();
    strip_hop_by_hop(&mut headers);
    let reserved: Vec<HeaderName> = headers.keys().filter(|n| is_reserved(n)).cloned().collect();
    for name in reserved {
        headers.remove(name);
    }
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::EXPECT);
    if let Some(len) = body_len {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    if !headers.contains_key(header::HOST) {
        let host = origin
            .uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_else(|| origin.local.to_string());
        if let Ok(value) = HeaderValue::from_str(&host) {
            headers.insert(header::HOST, value);
        }
    }
    let public = from_proxy
        .then(|| {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
            public_authority(host, &forwarded, &proto, origin.local.port())
        })
        .flatten();
    let server_port = match &public {
        Some((authority, port)) => {
            if let Ok(value) = HeaderValue::from_str(authority) {
                headers.insert(header::HOST, value);
            }
            *port
        }
        None => origin.local.port(),
    };
    let host = forwarded.host.clone().or_else(|| {
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
    });
    let chain_text: Vec<String> = chain.iter().map(IpAddr::to_string).collect();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set("x-forwarded-for", chain_text.join(", "));
    set("x-forwarded-proto", proto.clone());
    set("x-forwarded-port", server_port.to_string());
    if let Some(host) = host {
        set("x-forwarded-host", host);
    }
    set("x-request-id", request_id.clone());
    set("x-ppm-remote-addr", client_ip.to_string());
    set("x-ppm-remote-port", client_port.to_string());
    set("x-ppm-server-addr", origin.local.ip().to_string());
    set("x-ppm-server-port", server_port.to_string());
    if proto == "https" {
        set("x-ppm-https", "on".to_string());
    }
    if let Some(raw) = raw_target {
        headers.insert(crate::target::RAW_TARGET, raw);
    }
    (headers, request_id)
}

/// What a trusted proxy said about the public side of the request.
struct Forwarded {
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
    forwarded: &Forwarded,
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
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn origin<'a>(peer: &str, uri: &'a hyper::Uri) -> Origin<'a> {
        Origin {
            peer: peer.parse().unwrap(),
            local: "127.0.0.1:5501".parse().unwrap(),
            tls: false,
            uri,
        }
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let mut map = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut map);
        assert_eq!(map.len(), 1);
        assert!(map.contains_key("accept"));
    }

    #[test]
    fn an_untrusted_client_cannot_spoof_its_address_or_scheme() {
        let client = headers(&[
            ("host", "example.test"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("x-ppm-remote-addr", "6.6.6.6"),
            ("x-ppm-https", "on"),
            ("x-request-id", "spoofed"),
            ("content-length", "999"),
        ]);
        let uri: hyper::Uri = "/".parse().unwrap();
        let (out, id) = worker_headers(
            &client,
            &origin("127.0.0.9:4000", &uri),
            Some(3),
            &TrustedProxies::default(),
            "gen".into(),
        );
        assert_eq!(out["x-forwarded-for"], "127.0.0.9");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(out["x-ppm-remote-addr"], "127.0.0.9");
        assert_eq!(out["x-ppm-remote-port"], "4000");
        assert_eq!(out["x-forwarded-host"], "example.test");
        assert_eq!(out["content-length"], "3");
        assert_eq!(id, "gen");
        assert!(!out.contains_key("forwarded"));
        assert!(!out.contains_key("x-real-ip"));
        assert!(!out.contains_key("x-ppm-https"));
    }

    #[test]
    fn a_trusted_proxy_passes_on_the_client_address_and_scheme() {
        let trusted = TrustedProxies::parse(&["10.0.0.0/8".into(), "127.0.0.1".into()]).unwrap();
        let client = headers(&[
            ("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.1.2.3"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "abc-123"),
        ]);
        let uri: hyper::Uri = "/".parse().unwrap();
        let (out, id) = worker_headers(
            &client,
            &origin("127.0.0.1:4000", &uri),
            None,
            &trusted,
            "gen".into(),
        );
        // 6.6.6.6 was added by the client itself: the client is the last
        // untrusted hop.
        assert_eq!(out["x-ppm-remote-addr"], "203.0.113.7");
        assert_eq!(
            out["x-forwarded-for"],
            "6.6.6.6, 203.0.113.7, 10.1.2.3, 127.0.0.1"
        );
        assert_eq!(out["x-forwarded-proto"], "https");
        assert_eq!(out["x-ppm-https"], "on");
        assert_eq!(id, "abc-123");
        assert!(!out.contains_key("content-length"));
    }

    /// The worker headers of a request from `peer` with `client` headers
    /// through the balancer port 5501.
    fn through(peer: &str, client: &[(&str, &str)]) -> HeaderMap {
        let trusted = TrustedProxies::parse(&["10.0.0.0/8".into()]).unwrap();
        let uri: hyper::Uri = "/".parse().unwrap();
        let origin = origin(peer, &uri);
        worker_headers(&headers(client), &origin, None, &trusted, "id".into()).0
    }

    #[test]
    fn a_tls_proxy_on_443_makes_host_and_server_port_say_443() {
        let proxied = [
            ("host", "127.0.0.1:5501"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "443"),
        ];
        let out = through("10.0.0.1:4000", &proxied);
        assert_eq!(out["host"], "127.0.0.1");
        assert_eq!(out["x-ppm-server-port"], "443");
        assert_eq!(out["x-forwarded-port"], "443");
        // The scheme alone means its default port.
        let out = through("10.0.0.1:4000", &proxied[..2]);
        assert_eq!(out["host"], "127.0.0.1");
        assert_eq!(out["x-ppm-server-port"], "443");
        // A port other than the scheme's default stays in Host.
        let out = through(
            "10.0.0.1:4000",
            &[
                ("host", "127.0.0.1:5501"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-port", "8443"),
            ],
        );
        assert_eq!(out["host"], "127.0.0.1:8443");
        assert_eq!(out["x-ppm-server-port"], "8443");
    }

    #[test]
    fn a_forwarded_host_names_the_host_and_its_port_or_the_schemes() {
        let out = through(
            "10.0.0.1:4000",
            &[
                ("host", "backend:5501"),
                ("x-forwarded-host", "shop.example:8080"),
            ],
        );
        assert_eq!(out["host"], "shop.example:8080");
        assert_eq!(out["x-ppm-server-port"], "8080");
        let out = through(
            "10.0.0.1:4000",
            &[
                ("host", "backend:5501"),
                ("x-forwarded-host", "[2001:db8::1]"),
                ("x-forwarded-proto", "https"),
            ],
        );
        assert_eq!(out["host"], "[2001:db8::1]");
        assert_eq!(out["x-ppm-server-port"], "443");
        // A public port in Host (nginx's `$http_host`) is kept; ppm's own
        // port there is the proxy's hop, not the client's.
        let out = through(
            "10.0.0.1:4000",
            &[("host", "shop.example:8080"), ("x-forwarded-proto", "http")],
        );
        assert_eq!(out["host"], "shop.example:8080");
        assert_eq!(out["x-ppm-server-port"], "8080");
        // Nothing forwarded: the request is left as it came.
        let out = through("10.0.0.1:4000", &[("host", "backend:5501")]);
        assert_eq!(out["host"], "backend:5501");
        assert_eq!(out["x-ppm-server-port"], "5501");
    }

    #[test]
    fn an_untrusted_client_cannot_set_the_port_or_host() {
        let out = through(
            "192.0.2.1:4000",
            &[
                ("host", "127.0.0.1:5501"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-port", "443"),
                ("x-forwarded-host", "evil.example"),
            ],
        );
        assert_eq!(out["host"], "127.0.0.1:5501");
        assert_eq!(out["x-forwarded-port"], "5501");
        assert_eq!(out["x-ppm-server-port"], "5501");
        assert_eq!(out["x-forwarded-host"], "127.0.0.1:5501");
    }

    #[test]
    fn trusted_proxies_parse_addresses_and_cidrs() {
        let t = TrustedProxies::parse(&["192.168.0.0/16, ::1".into()]).unwrap();
        assert!(t.contains("192.168.4.5".parse().unwrap()));
        assert!(t.contains("::1".parse().unwrap()));
        assert!(!t.contains("10.0.0.1".parse().unwrap()));
        assert!(TrustedProxies::parse(&["nonsense".into()]).is_err());
    }
}
