//! Tests of `forwarding`: what the worker is told, from whom it is believed.

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

/// What the worker gets, as one map: the headers `Forwarding::headers`
/// gives, and its address fields under the names of the master's
/// private headers.
fn worker_headers(
    client: &HeaderMap,
    origin: &Origin<'_>,
    body_len: Option<usize>,
    trusted: &TrustedProxies,
    generated_id: String,
) -> (HeaderMap, String) {
    let view = Forwarding::new(client, origin, trusted, generated_id);
    let mut out = HeaderMap::new();
    view.headers(client, body_len, |name, value| {
        out.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value).unwrap(),
        );
    });
    let mut set = |name: &'static str, value: String| {
        out.insert(name, HeaderValue::from_str(&value).unwrap());
    };
    set("x-ppm-remote-addr", view.remote_addr.to_string());
    set("x-ppm-remote-port", view.remote_port.to_string());
    set("x-ppm-server-port", view.server_port.to_string());
    if view.https {
        set("x-ppm-https", "on".into());
    }
    (out, view.request_id)
}

#[test]
fn headers_keep_their_order_and_the_host_its_place() {
    let trusted = TrustedProxies::parse(&["10.0.0.0/8".into()]).unwrap();
    let client = headers(&[
        ("accept", "*/*"),
        ("host", "backend:5501"),
        ("connection", "x-gone"),
        ("x-gone", "1"),
        ("cookie", "a=1"),
        ("cookie", "b=2"),
        ("x-forwarded-host", "shop.example"),
    ]);
    let uri: hyper::Uri = "/".parse().unwrap();
    let (out, _) = worker_headers(
        &client,
        &origin("10.0.0.1:4000", &uri),
        Some(12),
        &trusted,
        "id".into(),
    );
    let names: Vec<&str> = out.keys().map(|n| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "accept",
            "host",
            "cookie",
            "content-length",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-port",
            "x-forwarded-host",
            "x-request-id",
            "x-ppm-remote-addr",
            "x-ppm-remote-port",
            "x-ppm-server-port"
        ]
    );
    assert_eq!(out["host"], "shop.example");
    assert_eq!(out.get_all("cookie").iter().count(), 2);
    assert_eq!(out["content-length"], "12");
    assert_eq!(out["x-forwarded-port"], "80");
    // No Host from the client: the address it reached, after the body's length.
    let (out, _) = worker_headers(
        &headers(&[]),
        &origin("127.0.0.9:4000", &uri),
        None,
        &trusted,
        "id".into(),
    );
    assert_eq!(out["host"], "127.0.0.1:5501");
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
