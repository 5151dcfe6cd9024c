//! The front door: what clients may and may not make the master believe.

mod common;

use common::*;

#[test]
fn a_spoofed_forwarded_for_from_an_untrusted_client_does_not_reach_remote_addr() {
    let cluster = Cluster::start(Setup::callable("basic", 1));
    let r: serde_json::Value = http()
        .get(cluster.url("/remote"))
        .header("X-Forwarded-For", "6.6.6.6")
        .header("X-Forwarded-Proto", "https")
        .header("X-Request-Id", "client-chosen")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["REMOTE_ADDR"], "127.0.0.1");
    assert_eq!(r["HTTP_X_FORWARDED_FOR"], "127.0.0.1");
    assert_eq!(r["HTTP_X_FORWARDED_PROTO"], "http");
    assert!(r["HTTPS"].is_null());
    assert_ne!(r["HTTP_X_REQUEST_ID"], "client-chosen");
}

#[test]
fn a_trusted_proxy_passes_on_the_client_address_scheme_and_request_id() {
    let cluster = Cluster::start(Setup::callable("basic", 1).arg("--trusted-proxies=127.0.0.0/8"));
    let r = http()
        .get(cluster.url("/remote"))
        .header("X-Forwarded-For", "203.0.113.9")
        .header("X-Forwarded-Proto", "https")
        .header("X-Request-Id", "from-the-proxy")
        .send()
        .unwrap();
    assert_eq!(
        r.headers()["x-request-id"],
        "from-the-proxy",
        "the id goes back to the client"
    );
    let r: serde_json::Value = r.json().unwrap();
    assert_eq!(r["REMOTE_ADDR"], "203.0.113.9");
    assert_eq!(r["HTTP_X_FORWARDED_FOR"], "203.0.113.9, 127.0.0.1");
    assert_eq!(r["HTTPS"], "on");
    assert_eq!(r["HTTP_X_REQUEST_ID"], "from-the-proxy");
}

#[test]
fn every_response_carries_a_request_id_the_app_saw_too() {
    let cluster = Cluster::start(Setup::callable("basic", 1));
    let r = http().get(cluster.url("/remote")).send().unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let r: serde_json::Value = r.json().unwrap();
    assert_eq!(r["HTTP_X_REQUEST_ID"], id.as_str());
    assert_eq!(id.len(), 32);
}
