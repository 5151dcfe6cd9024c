//! Behind a TLS-terminating proxy, the port the client used reaches the
//! app: a real Symfony application (`tests/fixtures/symfony`) builds its
//! URLs without ppm's own port.

mod common;

use common::*;
use serde_json::Value;

/// The Symfony fixture on one worker, with `args`.
fn symfony(args: &[&str]) -> Cluster {
    Cluster::start(Setup {
        app: fixture("symfony"),
        bridge: "httpKernel",
        bootstrap: "symfony",
        workers: 1,
        extra: args.iter().map(|a| a.to_string()).collect(),
        wait_ready: true,
    })
}

fn json(response: reqwest::blocking::Response) -> Value {
    let status = response.status();
    let text = response.text().unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
}

#[test]
fn behind_a_tls_proxy_on_443_the_app_sees_port_443_and_builds_urls_without_a_port() {
    let cluster = symfony(&["--trusted-proxies=127.0.0.1/32"]);
    // The client's address is applied by ppm, so the app does not trust
    // the request's forwarding headers itself: ppm must apply the port.
    let through_proxy = |headers: &[(&str, &str)]| {
        let mut request = http()
            .get(cluster.url("/url?page=2"))
            .header("X-Forwarded-For", "203.0.113.7");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        json(request.send().unwrap())
    };
    for headers in [
        &[("X-Forwarded-Proto", "https"), ("X-Forwarded-Port", "443")][..],
        &[("X-Forwarded-Proto", "https")][..],
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "localhost"),
        ][..],
    ] {
        let seen = through_proxy(headers);
        let host = if headers.len() == 2 && headers[1].0 == "X-Forwarded-Host" {
            "localhost"
        } else {
            "127.0.0.1"
        };
        assert_eq!(seen["client_ip"], "203.0.113.7", "{seen}");
        assert_eq!(seen["port"], 443, "{headers:?}: {seen}");
        assert_eq!(seen["server_port"], "443", "{seen}");
        assert_eq!(seen["uri"], format!("https://{host}/url?page=2"), "{seen}");
        assert_eq!(seen["url"], format!("https://{host}/hello"), "{seen}");
    }
    let seen = through_proxy(&[("X-Forwarded-Proto", "https"), ("X-Forwarded-Port", "8443")]);
    assert_eq!(seen["port"], 8443, "{seen}");
    assert_eq!(seen["uri"], "https://127.0.0.1:8443/url?page=2", "{seen}");
}

#[test]
fn x_forwarded_port_from_an_untrusted_client_is_replaced() {
    let cluster = symfony(&[]);
    let seen = json(
        http()
            .get(cluster.url("/url"))
            .header("X-Forwarded-Proto", "https")
            .header("X-Forwarded-Port", "443")
            .send()
            .unwrap(),
    );
    let port = cluster.port.to_string();
    assert_eq!(seen["port"], cluster.port, "{seen}");
    assert_eq!(seen["server_port"], port.as_str(), "{seen}");
    assert_eq!(
        seen["uri"],
        format!("http://127.0.0.1:{port}/url"),
        "{seen}"
    );
}
