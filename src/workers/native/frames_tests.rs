//! Unit tests of the frame protocol, both directions, and of malformed input.
use super::*;

fn head() -> RequestHead {
    RequestHead {
        method: "POST".into(),
        target: "/upload?x=1".into(),
        protocol: "HTTP/1.1".into(),
        remote_addr: "::1".into(),
        remote_port: 51234,
        server_addr: "127.0.0.1".into(),
        server_port: 8080,
        tls: true,
        content_length: Some(12),
        headers: vec![
            ("Host".into(), b"example.test".to_vec()),
            ("X-Bin".into(), vec![0xff, 0x00, b'a']),
        ],
        cgi: vec![
            (b"FCGI_ROLE".to_vec(), b"RESPONDER".to_vec()),
            (b"SCRIPT_NAME".to_vec(), vec![0xe9, b'&']),
        ],
    }
}

fn roundtrip_worker(frame: ToWorker) {
    let mut out = Vec::new();
    frame.encode(&mut out);
    let (kind, payload, used) = split(&out).unwrap().unwrap();
    assert_eq!(used, out.len());
    assert_eq!(ToWorker::parse(kind, payload).unwrap(), frame);
    // And through the blocking reader.
    let mut buf = Vec::new();
    let kind = read_frame(&mut out.as_slice(), &mut buf).unwrap();
    assert_eq!(ToWorker::parse(kind, &buf).unwrap(), frame);
}

fn roundtrip_master(frame: ToMaster) {
    let mut out = Vec::new();
    frame.encode(&mut out);
    let (kind, payload, used) = split(&out).unwrap().unwrap();
    assert_eq!(used, out.len());
    assert_eq!(ToMaster::parse(kind, payload).unwrap(), frame);
}

#[test]
fn master_to_worker_frames_round_trip() {
    roundtrip_worker(ToWorker::Head(head()));
    roundtrip_worker(ToWorker::Head(RequestHead {
        content_length: None,
        tls: false,
        headers: vec![],
        cgi: vec![],
        ..head()
    }));
    roundtrip_worker(ToWorker::Body(b"hello".to_vec()));
    // An empty chunk says nothing: it is not sent at all.
    let mut out = Vec::new();
    ToWorker::Body(Vec::new()).encode(&mut out);
    assert!(out.is_empty());
    roundtrip_worker(ToWorker::BodyEnd);
    roundtrip_worker(ToWorker::Serve);
    roundtrip_worker(ToWorker::Hold);
    roundtrip_worker(ToWorker::Dispatch {
        id: u64::MAX - 1,
        deadline_ns: 1 << 50,
    });
}

#[test]
fn worker_to_master_frames_round_trip() {
    roundtrip_master(ToMaster::Head {
        status: 404,
        lines: vec![b"Content-type: text/html".to_vec(), b"X-A: b".to_vec()],
    });
    roundtrip_master(ToMaster::Body(vec![1, 2, 3]));
    roundtrip_master(ToMaster::End {
        flags: END_EARLY,
        outcome: Outcome::Exit,
    });
    roundtrip_master(ToMaster::Ready);
    roundtrip_master(ToMaster::Flush);
    roundtrip_master(ToMaster::Stats {
        memory: 1 << 40,
        peak: 7,
    });
    roundtrip_master(ToMaster::Log("PHP Warning: x".into()));
    roundtrip_master(ToMaster::BootError("no bootstrap".into()));
    roundtrip_master(ToMaster::Backtrace("#0 main".into()));
    roundtrip_master(ToMaster::Took(1 << 33));
    roundtrip_master(ToMaster::Expired(7));
    roundtrip_master(ToMaster::Held);
}

#[test]
fn large_bodies_are_split_into_chunks() {
    let data = vec![7u8; BODY_CHUNK * 2 + 3];
    let mut out = Vec::new();
    encode_response_body(&mut out, &data);
    let mut rest = out.as_slice();
    let mut joined = Vec::new();
    while let Some((kind, payload, used)) = split(rest).unwrap() {
        match ToMaster::parse(kind, payload).unwrap() {
            ToMaster::Body(chunk) => joined.extend(chunk),
            other => panic!("unexpected {other:?}"),
        }
        rest = &rest[used..];
    }
    assert!(rest.is_empty());
    assert_eq!(joined, data);
}

#[test]
fn incomplete_frames_wait_for_more_bytes() {
    let mut out = Vec::new();
    ToWorker::Head(head()).encode(&mut out);
    for cut in 0..out.len() {
        assert_eq!(split(&out[..cut]).unwrap(), None, "cut at {cut}");
    }
}

#[test]
fn oversized_and_empty_frames_are_refused() {
    let mut big = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
    big.push(BODY);
    assert_eq!(split(&big), Err(FrameError::Oversized(MAX_FRAME + 1)));
    let mut buf = Vec::new();
    assert!(matches!(
        read_frame(&mut big.as_slice(), &mut buf),
        Err(ReadError::Frame(FrameError::Oversized(_)))
    ));
    assert_eq!(split(&[0, 0, 0, 0]), Err(FrameError::Empty));
}

#[test]
fn malformed_payloads_are_typed_errors() {
    assert_eq!(ToWorker::parse(99, &[]), Err(FrameError::UnknownKind(99)));
    assert_eq!(
        ToMaster::parse(HEAD, &[]),
        Err(FrameError::UnknownKind(HEAD))
    );
    let mut out = Vec::new();
    ToWorker::Head(head()).encode(&mut out);
    let payload = &out[PREFIX..];
    // Truncated anywhere inside: never a panic, always an error.
    for cut in 0..payload.len() {
        assert!(
            ToWorker::parse(HEAD, &payload[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    let mut trailing = payload.to_vec();
    trailing.push(0);
    assert_eq!(
        ToWorker::parse(HEAD, &trailing),
        Err(FrameError::Malformed {
            kind: HEAD,
            what: "trailing bytes"
        })
    );
    // A header count the payload cannot hold.
    let mut lie = Vec::new();
    ToWorker::Head(RequestHead::default()).encode(&mut lie);
    let n = lie.len();
    lie[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        ToWorker::parse(HEAD, &lie[PREFIX..]),
        Err(FrameError::Malformed { .. })
    ));
    assert!(matches!(
        ToMaster::parse(RESPONSE_END, &[0, 42]),
        Err(FrameError::Malformed {
            what: "unknown outcome",
            ..
        })
    ));
    // Non-UTF-8 method.
    let mut bad = Vec::new();
    ToWorker::Head(RequestHead {
        method: "GET".into(),
        ..RequestHead::default()
    })
    .encode(&mut bad);
    bad[PREFIX + 4] = 0xff;
    assert!(matches!(
        ToWorker::parse(HEAD, &bad[PREFIX..]),
        Err(FrameError::Malformed {
            what: "a string is not UTF-8",
            ..
        })
    ));
}

#[test]
fn a_closed_stream_is_not_a_frame_error() {
    let mut buf = Vec::new();
    assert!(matches!(
        read_frame(&mut [0u8, 0].as_slice(), &mut buf),
        Err(ReadError::Closed)
    ));
}
