//! The headers of the normalized request a worker gets: hop-by-hop headers
//! removed, and the forwarding headers (`X-Forwarded-*`, `X-Request-Id`,
//! the master's private `X-Ppm-*`) set by the master. Forwarding headers a
//! client sent are believed only when the client is a trusted proxy
//! (`--trusted-proxies`); from anyone else they are replaced by what the
//! master saw, so no client can spoof its address or scheme.

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
    let forwarded_port = first("x-forwarded-port").filter(|p| p.parse::<u16>().is_ok());
    let forwarded_host = first("x-forwarded-host");
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
    let host = forwarded_host.or_else(|| {
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
    set(
        "x-forwarded-port",
        forwarded_port.unwrap_or_else(|| origin.local.port().to_string()),
    );
    if let Some(host) = host {
        set("x-forwarded-host", host);
    }
    set("x-request-id", request_id.clone());
    set("x-ppm-remote-addr", client_ip.to_string());
    set("x-ppm-remote-port", client_port.to_string());
    set("x-ppm-server-addr", origin.local.ip().to_string());
    set("x-ppm-server-port", origin.local.port().to_string());
    if proto == "https" {
        set("x-ppm-https", "on".to_string());
    }
    if let Some(raw) = raw_target {
        headers.insert(crate::target::RAW_TARGET, raw);
    }
    (headers, request_id)
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

    #[test]
    fn trusted_proxies_parse_addresses_and_cidrs() {
        let t = TrustedProxies::parse(&["192.168.0.0/16, ::1".into()]).unwrap();
        assert!(t.contains("192.168.4.5".parse().unwrap()));
        assert!(t.contains("::1".parse().unwrap()));
        assert!(!t.contains("10.0.0.1".parse().unwrap()));
        assert!(TrustedProxies::parse(&["nonsense".into()]).is_err());
    }
}
