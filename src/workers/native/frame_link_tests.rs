//! Unit tests of the worker's frame link: the request order, early ends,
//! and the shared queue (serve, hold, expired requests, bodies that follow
//! on the own socket).
use super::*;
use crate::workers::native::frames::split;
use crate::workers::native::io::WorkerIo;

fn frames_of(bytes: &[u8]) -> Vec<ToMaster> {
    let mut rest = bytes;
    let mut out = Vec::new();
    while let Some((kind, payload, used)) = split(rest).unwrap() {
        out.push(ToMaster::parse(kind, payload).unwrap());
        rest = &rest[used..];
    }
    out
}

fn send(stream: &mut UnixStream, frames: &[ToWorker]) {
    let mut out = Vec::new();
    for f in frames {
        f.encode(&mut out);
    }
    stream.write_all(&out).unwrap();
}

fn read_available(stream: &mut UnixStream) -> Vec<u8> {
    use std::io::Read;
    stream.set_nonblocking(true).unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
    }
    stream.set_nonblocking(false).unwrap();
    all
}

#[test]
fn an_unread_body_is_drained_before_ready() {
    let (ours, mut master) = UnixStream::pair().unwrap();
    let mut io = WorkerIo::new(Box::new(FrameLink::new(ours).unwrap()));
    let head = RequestHead {
        method: "POST".into(),
        target: "/".into(),
        protocol: "HTTP/1.1".into(),
        content_length: Some(6),
        ..RequestHead::default()
    };
    send(
        &mut master,
        &[
            ToWorker::Head(head.clone()),
            ToWorker::Body(b"abc".to_vec()),
            ToWorker::Body(b"def".to_vec()),
            ToWorker::BodyEnd,
            ToWorker::Head(RequestHead {
                method: "GET".into(),
                ..head
            }),
            ToWorker::BodyEnd,
        ],
    );
    io.next_request(None).unwrap().unwrap();
    let mut buf = [0u8; 2];
    assert_eq!(io.read_body(&mut buf).unwrap(), 2);
    assert_eq!(&buf, b"ab");
    io.send_head(200, &[b"X-A: b"]).unwrap();
    io.write(b"out").unwrap();
    io.end_response(0, Outcome::Normal).unwrap();
    // The rest of the first body is skipped: the next frame is a head.
    let next = io.next_request(Some((10, 20))).unwrap().unwrap();
    assert_eq!(next.get(next.method), b"GET");
    assert_eq!(io.read_body(&mut buf).unwrap(), 0);
    let got = frames_of(&read_available(&mut master));
    assert_eq!(
        got,
        vec![
            ToMaster::Ready,
            ToMaster::Head {
                status: 200,
                lines: vec![b"X-A: b".to_vec()]
            },
            ToMaster::Body(b"out".to_vec()),
            ToMaster::End {
                flags: 0,
                outcome: Outcome::Normal
            },
            ToMaster::Stats {
                memory: 10,
                peak: 20
            },
            ToMaster::Ready,
        ]
    );
    drop(master);
    assert!(io.next_request(None).unwrap().is_none());
}

#[test]
fn output_after_an_early_end_is_dropped() {
    let (ours, mut master) = UnixStream::pair().unwrap();
    let mut io = WorkerIo::new(Box::new(FrameLink::new(ours).unwrap()));
    send(
        &mut master,
        &[ToWorker::Head(RequestHead::default()), ToWorker::BodyEnd],
    );
    io.next_request(None).unwrap().unwrap();
    io.send_head(200, &[]).unwrap();
    io.end_response(END_EARLY, Outcome::Normal).unwrap();
    io.write(b"late").unwrap();
    io.end_response(0, Outcome::Exception).unwrap();
    io.flush().unwrap();
    let got = frames_of(&read_available(&mut master));
    assert_eq!(
        got,
        vec![
            ToMaster::Ready,
            ToMaster::Head {
                status: 200,
                lines: vec![]
            },
            ToMaster::End {
                flags: END_EARLY,
                outcome: Outcome::Normal
            },
        ]
    );
}

#[test]
fn a_frame_out_of_order_is_an_error() {
    let (ours, mut master) = UnixStream::pair().unwrap();
    let mut io = WorkerIo::new(Box::new(FrameLink::new(ours).unwrap()));
    send(&mut master, &[ToWorker::BodyEnd]);
    assert!(matches!(
        io.next_request(None),
        Err(IoError::Unexpected { .. })
    ));
}

/// A link on a shared queue; returns the master's ends of the socket
/// and of the queue.
fn queued_link() -> (WorkerIo, UnixStream, OwnedFd) {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let (ours, master) = UnixStream::pair().unwrap();
    let (queue_master, queue_worker) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let link = FrameLink::new(ours)
        .unwrap()
        .with_queue(queue_worker)
        .unwrap();
    (WorkerIo::new(Box::new(link)), master, queue_master)
}

fn enqueue(queue: &OwnedFd, frames: &[ToWorker]) {
    use std::os::fd::AsRawFd;
    let mut out = Vec::new();
    for f in frames {
        f.encode(&mut out);
    }
    nix::sys::socket::send(queue.as_raw_fd(), &out, nix::sys::socket::MsgFlags::empty()).unwrap();
}

fn get(target: &str) -> RequestHead {
    RequestHead {
        method: "GET".into(),
        target: target.as_bytes().to_vec(),
        ..RequestHead::default()
    }
}

fn dispatch(id: u64) -> ToWorker {
    ToWorker::Dispatch { id, deadline_ns: 0 }
}

/// Serves the request in `io` with an empty 200 and says ready for the
/// next, returning its target.
fn answer_and_take_next(io: &mut WorkerIo) -> Option<Vec<u8>> {
    io.send_head(200, &[]).unwrap();
    io.end_response(0, Outcome::Normal).unwrap();
    io.next_request(None)
        .unwrap()
        .map(|head| head.get(head.uri).to_vec())
}

#[test]
fn a_held_worker_takes_only_its_own_requests_and_a_serving_one_the_queue() {
    let (mut io, mut master, queue) = queued_link();
    enqueue(
        &queue,
        &[
            dispatch(7),
            ToWorker::Head(get("/queued")),
            ToWorker::BodyEnd,
        ],
    );
    // Held (the start): the queued request stays; the own one is served.
    send(
        &mut master,
        &[ToWorker::Head(get("/own")), ToWorker::BodyEnd],
    );
    let head = io.next_request(None).unwrap().unwrap();
    assert_eq!(head.get(head.uri), b"/own");
    // Told to serve: the queued request comes next, its body end
    // inline; the master hears `Took` before the response.
    send(&mut master, &[ToWorker::Serve]);
    assert_eq!(
        answer_and_take_next(&mut io).as_deref(),
        Some(&b"/queued"[..])
    );
    let mut buf = [0u8; 4];
    assert_eq!(io.read_body(&mut buf).unwrap(), 0);
    io.send_head(200, &[]).unwrap();
    io.end_response(0, Outcome::Normal).unwrap();
    // Held again between requests: `Held`, and the next queued request
    // is left for other workers.
    send(&mut master, &[ToWorker::Hold]);
    enqueue(
        &queue,
        &[
            dispatch(8),
            ToWorker::Head(get("/other")),
            ToWorker::BodyEnd,
        ],
    );
    send(
        &mut master,
        &[ToWorker::Head(get("/own2")), ToWorker::BodyEnd],
    );
    let head = io.next_request(None).unwrap().unwrap();
    assert_eq!(head.get(head.uri), b"/own2");
    let got = frames_of(&read_available(&mut master));
    let empty_200 = ToMaster::Head {
        status: 200,
        lines: vec![],
    };
    let end = ToMaster::End {
        flags: 0,
        outcome: Outcome::Normal,
    };
    assert_eq!(
        got,
        vec![
            ToMaster::Ready,
            empty_200.clone(),
            end.clone(),
            ToMaster::Ready,
            ToMaster::Took(7),
            empty_200,
            end,
            ToMaster::Ready,
            ToMaster::Held,
        ]
    );
}

#[test]
fn a_queued_body_that_did_not_fit_follows_on_the_own_socket() {
    let (mut io, mut master, queue) = queued_link();
    send(&mut master, &[ToWorker::Serve]);
    let post = RequestHead {
        method: "POST".into(),
        content_length: Some(3),
        ..RequestHead::default()
    };
    enqueue(&queue, &[dispatch(1), ToWorker::Head(post)]);
    io.next_request(None).unwrap().unwrap();
    // A `Hold` may come before the body: it waits for the request's end.
    send(
        &mut master,
        &[
            ToWorker::Hold,
            ToWorker::Body(b"abc".to_vec()),
            ToWorker::BodyEnd,
        ],
    );
    let mut buf = [0u8; 8];
    assert_eq!(io.read_body(&mut buf).unwrap(), 3);
    assert_eq!(&buf[..3], b"abc");
    assert_eq!(io.read_body(&mut buf).unwrap(), 0);
    io.send_head(204, &[]).unwrap();
    io.end_response(0, Outcome::Normal).unwrap();
    drop(queue);
    // Held now: the worker waits on its own socket only, and stops when
    // the master closes it.
    let closer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(30));
        let got = frames_of(&read_available(&mut master));
        drop(master);
        got
    });
    assert!(io.next_request(None).unwrap().is_none());
    let got = closer.join().unwrap();
    assert_eq!(got[..2], [ToMaster::Ready, ToMaster::Took(1)]);
    assert_eq!(got[got.len() - 2..], [ToMaster::Ready, ToMaster::Held]);
}

#[test]
fn a_queued_request_past_its_deadline_is_answered_expired_unrun() {
    let (mut io, mut master, queue) = queued_link();
    send(&mut master, &[ToWorker::Serve]);
    let past = ToWorker::Dispatch {
        id: 3,
        deadline_ns: 1,
    };
    enqueue(
        &queue,
        &[past, ToWorker::Head(get("/late")), ToWorker::BodyEnd],
    );
    enqueue(
        &queue,
        &[
            dispatch(4),
            ToWorker::Head(get("/on-time")),
            ToWorker::BodyEnd,
        ],
    );
    let head = io.next_request(None).unwrap().unwrap();
    assert_eq!(head.get(head.uri), b"/on-time");
    let got = frames_of(&read_available(&mut master));
    assert_eq!(
        got,
        vec![ToMaster::Ready, ToMaster::Expired(3), ToMaster::Took(4)]
    );
}

#[test]
fn a_queue_message_without_a_dispatch_is_an_error() {
    let (mut io, mut master, queue) = queued_link();
    send(&mut master, &[ToWorker::Serve]);
    enqueue(&queue, &[ToWorker::Head(get("/")), ToWorker::BodyEnd]);
    assert!(matches!(
        io.next_request(None),
        Err(IoError::Unexpected { .. })
    ));
}
