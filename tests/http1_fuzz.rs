//! Property tests (a bounded fuzz run) over the master's HTTP/1 request
//! reader: whatever the bytes, it never panics; how the bytes are split
//! into reads never changes the outcome; and what it accepts is one
//! unambiguous, normalized request that reads back the same when it is
//! written out the way a worker receives it.
//!
//! Runs a few thousand cases per property in well under 30 s; set
//! `PROPTEST_CASES` for a longer run.

use ppm::front::http1::{
    parse_head, parse_request, ChunkedDecoder, Decoded, Framing, Head, HeadScanner, Limits,
};
use proptest::prelude::*;

fn limits() -> Limits {
    Limits {
        max_request_line: 256,
        max_header_size: 512,
        max_headers: 12,
        max_body_size: 4096,
        ..Limits::default()
    }
}

/// Fragments that make the grammar's corners likely.
const FRAGMENTS: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"PUT ",
    b"OPTIONS ",
    b"CONNECT ",
    b"G@T ",
    b"/",
    b"/a?b=c",
    b"*",
    b"http://h/p",
    b" HTTP/1.1",
    b" HTTP/1.0",
    b" HTTP/2.0",
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n\r\n",
    b"Host: x",
    b"Host: a b",
    b"Content-Length: ",
    b"Content-Length: 3",
    b"content-length:5",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: gzip",
    b"Connection: close",
    b"Expect: 100-continue",
    b"0",
    b"3",
    b"5",
    b"a",
    b"ff",
    b"ffffffffffffffffff",
    b";",
    b"=",
    b"\"",
    b"\\",
    b" ",
    b"\t",
    b"\0",
    b":",
    b",",
    b"abc",
    b"X-A: b",
    b"\x7f",
    b"\xff",
    b"0\r\n\r\n",
];

fn grammar_soup() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(proptest::sample::select(FRAGMENTS), 0..40)
        .prop_map(|parts| parts.concat())
}

/// A well-formed request with a random framing.
fn valid_request() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    (
        proptest::sample::select(&["GET", "POST", "PUT", "PATCH", "DELETE"][..]),
        "/[a-z0-9/_.-]{0,20}(\\?[a-z0-9=&]{0,10})?",
        proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,10}", "[ -~]{0,20}"), 0..5),
        proptest::collection::vec(any::<u8>(), 0..300),
        any::<bool>(),
        proptest::collection::vec(1usize..64, 1..8),
    )
        .prop_map(|(method, path, fields, body, chunked, sizes)| {
            let mut req =
                format!("{method} {path} HTTP/1.1\r\nHost: example.test\r\n").into_bytes();
            for (name, value) in fields {
                let lower = name.to_ascii_lowercase();
                if [
                    "host",
                    "content-length",
                    "transfer-encoding",
                    "expect",
                    "connection",
                ]
                .contains(&lower.as_str())
                {
                    continue;
                }
                req.extend_from_slice(format!("{name}: {}\r\n", value.trim()).as_bytes());
            }
            if chunked {
                req.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                let mut rest = &body[..];
                let mut sizes = sizes.iter().cycle();
                while !rest.is_empty() {
                    let n = (*sizes.next().unwrap()).min(rest.len());
                    req.extend_from_slice(format!("{n:x};ext=\"v\"\r\n").as_bytes());
                    req.extend_from_slice(&rest[..n]);
                    req.extend_from_slice(b"\r\n");
                    rest = &rest[n..];
                }
                req.extend_from_slice(b"0\r\nX-Trailer: 1\r\n\r\n");
            } else {
                req.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                req.extend_from_slice(&body);
            }
            (req, body)
        })
}

type Outcome = Result<Option<(String, String, Vec<u8>, usize)>, u16>;

fn summary(parsed: Result<Option<(Head, Vec<u8>, usize)>, ppm::front::http1::Refusal>) -> Outcome {
    match parsed {
        Ok(Some((head, body, used))) => Ok(Some((
            head.method.to_string(),
            head.uri.to_string(),
            body,
            used,
        ))),
        Ok(None) => Ok(None),
        Err(refusal) => Err(refusal.status.as_u16()),
    }
}

/// Parses the way a connection does, the input arriving in pieces cut at
/// `cuts`.
fn incremental(bytes: &[u8], cuts: &[usize], limits: &Limits) -> Outcome {
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    ends.push(bytes.len());
    ends.sort_unstable();
    let mut scanner = HeadScanner::default();
    let mut range = None;
    let mut arrived = 0;
    for &end in &ends {
        arrived = end;
        if let Some(r) = scanner
            .scan(&bytes[..end], limits)
            .map_err(|r| r.status.as_u16())?
        {
            range = Some(r);
            break;
        }
    }
    let Some(range) = range else {
        return Ok(None);
    };
    let head = parse_head(&bytes[range.clone()], limits).map_err(|r| r.status.as_u16())?;
    let mut at = range.end;
    let mut body = Vec::new();
    match head.framing {
        Framing::Empty => {}
        Framing::Length(len) => {
            if len > limits.max_body_size {
                return Err(413);
            }
            if at + len as usize > bytes.len() {
                return Ok(None);
            }
            body.extend_from_slice(&bytes[at..at + len as usize]);
            at += len as usize;
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            let head_end = at;
            let mut next_end = ends.iter().copied().filter(move |&e| e > head_end);
            let mut available = arrived.max(at);
            loop {
                let (used, decoded) = decoder
                    .step(&bytes[at..available], limits)
                    .map_err(|r| r.status.as_u16())?;
                match decoded {
                    Decoded::Data(r) => {
                        body.extend_from_slice(&bytes[at..][r]);
                        if body.len() as u64 > limits.max_body_size {
                            return Err(413);
                        }
                    }
                    Decoded::More => match next_end.find(|&e| e > available) {
                        Some(end) => available = end,
                        None => return Ok(None),
                    },
                    Decoded::Done => {
                        at += used;
                        break;
                    }
                }
                at += used;
            }
        }
    }
    Ok(Some((
        head.method.to_string(),
        head.uri.to_string(),
        body,
        at,
    )))
}

/// The request as a worker receives it: origin-form, HTTP/1.1, the
/// client's fields without framing ones, a Host, a Content-Length body.
fn as_forwarded(head: &Head, body: &[u8]) -> Vec<u8> {
    let mut out = format!("{} {} HTTP/1.1\r\n", head.method, head.uri).into_bytes();
    for (name, value) in &head.headers {
        if name == "content-length" || name == "transfer-encoding" {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // The master fills in the address the client reached when it sent no
    // Host (an HTTP/1.0 client may not), as `Forwarding` does.
    if !head.headers.contains_key("host") {
        out.extend_from_slice(b"host: 127.0.0.1:5501\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

fn check_accepted(head: &Head, body: &[u8]) -> Result<(), TestCaseError> {
    let lengths = head.headers.get_all("content-length").iter().count();
    let te = head.headers.contains_key("transfer-encoding");
    match head.framing {
        Framing::Chunked => prop_assert!(lengths == 0 && te),
        Framing::Length(n) => prop_assert!(lengths == 1 && !te && n as usize == body.len()),
        Framing::Empty => prop_assert!(lengths <= 1 && !te && body.is_empty()),
    }
    let uri = head.uri.to_string();
    prop_assert!(uri.starts_with('/') || uri == "*");
    for value in head.headers.values() {
        prop_assert!(!value
            .as_bytes()
            .iter()
            .any(|b| matches!(b, b'\r' | b'\n' | 0)));
    }
    // What a worker would get parses back to the same request, whole.
    let forwarded = as_forwarded(head, body);
    let again = parse_request(&forwarded, &Limits::default());
    let Ok(Some((head2, body2, used))) = again else {
        return Err(TestCaseError::fail(format!(
            "the forwarded form does not parse: {:?}",
            String::from_utf8_lossy(&forwarded)
        )));
    };
    prop_assert_eq!(used, forwarded.len());
    prop_assert_eq!(head2.method, head.method.clone());
    prop_assert_eq!(head2.uri, head.uri.clone());
    prop_assert_eq!(body2, body.to_vec());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = parse_request(&bytes, &limits());
    }

    #[test]
    fn grammar_soup_never_panics_and_what_is_accepted_is_normalized(bytes in grammar_soup()) {
        if let Ok(Some((head, body, _))) = parse_request(&bytes, &limits()) {
            check_accepted(&head, &body)?;
        }
    }

    #[test]
    fn how_the_bytes_arrive_does_not_change_the_outcome(
        bytes in prop_oneof![grammar_soup(), valid_request().prop_map(|(r, _)| r)],
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let whole = summary(parse_request(&bytes, &limits()));
        let pieces = incremental(&bytes, &cuts, &limits());
        prop_assert_eq!(whole, pieces);
    }

    #[test]
    fn valid_requests_parse_whole_and_forward_unambiguously(
        (request, body) in valid_request(),
        next in valid_request(),
    ) {
        let mut pipelined = request.clone();
        pipelined.extend_from_slice(&next.0);
        let (head, got, used) = parse_request(&pipelined, &Limits::default())
            .map_err(|r| TestCaseError::fail(format!("{r:?}: {:?}", String::from_utf8_lossy(&request))))?
            .expect("complete");
        prop_assert_eq!(used, request.len(), "the request ends where it ends");
        prop_assert_eq!(&got, &body);
        check_accepted(&head, &got)?;
        let (_, second, _) = parse_request(&pipelined[used..], &Limits::default())
            .map_err(|r| TestCaseError::fail(format!("{r:?}")))?
            .expect("complete");
        prop_assert_eq!(second, next.1);
    }

    #[test]
    fn mutated_valid_requests_never_panic_and_stay_normalized(
        (request, _) in valid_request(),
        edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = request;
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if let Ok(Some((head, body, _))) = parse_request(&bytes, &Limits::default()) {
            check_accepted(&head, &body)?;
        }
    }
}
