use http_body_util::BodyExt;
use hyper::body::Body;
use hyper::header::HeaderValue;
use hyper::{Method, Response, Version};

use super::write::write_response;
use super::*;
use crate::body::ProxyBody;

fn parse(bytes: &[u8]) -> Result<Option<(Head, Vec<u8>, usize)>, Refusal> {
    parse_request(bytes, &Limits::default())
}

fn status(bytes: &[u8]) -> u16 {
    match parse(bytes) {
        Ok(Some(_)) => 200,
        Ok(None) => 0,
        Err(r) => r.status.as_u16(),
    }
}

#[test]
fn a_plain_request_parses() {
    let (head, body, used) = parse(b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\nrest")
        .unwrap()
        .unwrap();
    assert_eq!(head.method, Method::GET);
    assert_eq!(head.uri, "/a?b=c");
    assert_eq!(head.headers["accept"], "*/*");
    assert!(head.keep_alive);
    assert!(body.is_empty());
    assert_eq!(used, 45);
}

#[test]
fn a_chunked_body_decodes_with_extensions_and_trailers() {
    let req = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                3;a=b;c=\"d e\"\r\nabc\r\n2 ; q\r\nde\r\n0\r\nX-T: 1\r\n\r\n";
    let (head, body, used) = parse(req).unwrap().unwrap();
    assert_eq!(head.framing, Framing::Chunked);
    assert_eq!(body, b"abcde");
    assert_eq!(used, req.len());
}

#[test]
fn ambiguous_framing_is_refused() {
    for req in [
        &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n",
        b"GET / HTTP/1.1\nHost: x\n\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET a HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        assert_eq!(status(req), 400, "{}", String::from_utf8_lossy(req));
    }
}

#[test]
fn bad_chunks_are_refused() {
    for chunks in [
        &b"g\r\n"[..],
        b"\r\n",
        b"0x3\r\nabc\r\n0\r\n\r\n",
        b"3 x\r\nabc\r\n0\r\n\r\n",
        b"3;\r\nabc\r\n0\r\n\r\n",
        b"3;a=\"b\r\nabc\r\n0\r\n\r\n",
        b"3\nabc\r\n0\r\n\r\n",
        b"3\r\nabcd\r\n0\r\n\r\n",
        b"11111111111111111\r\n",
        b"-3\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabc\r\n0\r\nbad trailer\r\n\r\n",
    ] {
        let mut req = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        req.extend_from_slice(chunks);
        assert_eq!(status(&req), 400, "{}", String::from_utf8_lossy(chunks));
    }
}

#[test]
fn limits_have_their_own_statuses() {
    let limits = Limits {
        max_request_line: 20,
        max_header_size: 40,
        max_headers: 2,
        max_body_size: 5,
        ..Limits::default()
    };
    let check = |req: &[u8]| parse_request(req, &limits).err().map(|r| r.status.as_u16());
    assert_eq!(
        check(b"GET /aaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n"),
        Some(414)
    );
    assert_eq!(check(b"GET /aaaaaaaaaaaaaaaaaaaaaaaaa"), Some(414));
    assert_eq!(
        check(b"GET / HTTP/1.1\r\nHost: x\r\nX: yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\r\n"),
        Some(431)
    );
    assert_eq!(
        check(b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n\r\n"),
        Some(431)
    );
    assert_eq!(
        check(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n"),
        Some(413)
    );
    assert_eq!(
        check(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef"),
        Some(413)
    );
}

#[test]
fn absolute_form_becomes_origin_form_with_its_host() {
    let (head, _, _) = parse(b"GET http://example.test:8080/p?q HTTP/1.1\r\nHost: other\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(head.uri, "/p?q");
    assert_eq!(head.headers["host"], "example.test:8080");
}

#[test]
fn connection_and_expect_are_understood() {
    let (head, _, _) = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
    assert!(!head.keep_alive);
    let (head, _, _) = parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(head.keep_alive);
    let (head, _, _) = parse(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(!head.keep_alive);
    assert_eq!(
        status(b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx"),
        200
    );
    assert_eq!(
        status(b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n"),
        417
    );
}

/// A body of unknown length, like a streamed worker response.
struct Frames(std::collections::VecDeque<&'static [u8]>);

impl Body for Frames {
    type Data = bytes::Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(
            self.0
                .pop_front()
                .map(|d| Ok(hyper::body::Frame::data(bytes::Bytes::from_static(d)))),
        )
    }
}

async fn written(
    status: u16,
    method: Method,
    version: Version,
    body: ProxyBody,
    headers: &[(&'static str, &'static str)],
) -> (String, bool) {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    for (k, v) in headers {
        response
            .headers_mut()
            .insert(*k, HeaderValue::from_static(v));
    }
    let mut out = Vec::new();
    let keep = write_response(
        &mut out,
        response,
        &method,
        version,
        true,
        &Limits::default(),
    )
    .await
    .unwrap();
    (String::from_utf8(out).unwrap(), keep)
}

fn streamed() -> ProxyBody {
    Frames(["ab".as_bytes(), "cde".as_bytes()].into()).boxed_unsync()
}

fn fixed(text: &'static str) -> ProxyBody {
    http_body_util::Full::new(bytes::Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[tokio::test]
async fn responses_are_framed_for_the_client_version() {
    let (out, keep) = written(200, Method::GET, Version::HTTP_11, streamed(), &[]).await;
    assert!(out.contains("transfer-encoding: chunked\r\n"), "{out}");
    assert!(
        out.ends_with("\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"),
        "{out}"
    );
    assert!(keep);
    let (out, keep) = written(200, Method::GET, Version::HTTP_10, streamed(), &[]).await;
    assert!(
        !out.contains("chunked") && out.contains("connection: close"),
        "{out}"
    );
    assert!(out.ends_with("\r\n\r\nabcde"), "{out}");
    assert!(!keep, "the end of the body is the end of the connection");
    let (out, keep) = written(200, Method::GET, Version::HTTP_10, fixed("abc"), &[]).await;
    assert!(
        out.contains("content-length: 3\r\nconnection: keep-alive\r\n"),
        "{out}"
    );
    assert!(keep);
}

#[tokio::test]
async fn head_204_and_304_answers_have_no_body() {
    let empty = || fixed("");
    let (out, _) = written(
        200,
        Method::HEAD,
        Version::HTTP_11,
        empty(),
        &[("content-length", "42")],
    )
    .await;
    assert!(
        out.contains("content-length: 42\r\n") && out.ends_with("\r\n\r\n"),
        "{out}"
    );
    let (out, _) = written(204, Method::GET, Version::HTTP_11, empty(), &[]).await;
    assert!(
        !out.contains("content-length") && !out.contains("chunked"),
        "{out}"
    );
    let (out, keep) = written(
        304,
        Method::GET,
        Version::HTTP_11,
        empty(),
        &[("etag", "\"x\"")],
    )
    .await;
    assert!(
        out.starts_with("HTTP/1.1 304 Not Modified\r\n") && out.ends_with("\r\n\r\n"),
        "{out}"
    );
    assert!(keep);
}

#[tokio::test]
async fn a_body_longer_than_its_declared_length_is_cut_and_the_connection_closed() {
    let (out, keep) = written(
        200,
        Method::GET,
        Version::HTTP_11,
        streamed(),
        &[("content-length", "3")],
    )
    .await;
    assert!(out.ends_with("\r\n\r\nabc"), "{out}");
    assert!(!keep);
}

#[test]
fn leading_empty_lines_are_skipped() {
    let (head, _, _) = parse(b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(head.uri, "/");
}
