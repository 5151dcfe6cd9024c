//! The FastCGI record layer (FastCGI 1.0 specification, sections 3 to 5):
//! records read from a byte stream, records and name-value pairs encoded.
//!
//! Nothing here knows about requests or HTTP; `server` drives it. Every
//! length read from the peer is checked before it is used, so a malformed
//! stream is an error, never a panic or an unbounded allocation (a record
//! is at most 8 + 65535 + 255 bytes).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// `FCGI_VERSION_1`, the only version there is.
const VERSION: u8 = 1;
/// The fixed header in front of every record.
pub const HEADER_LEN: usize = 8;
/// The most content one record carries.
pub const MAX_CONTENT: usize = 65535;

/// Record types.
pub mod kind {
    pub const BEGIN_REQUEST: u8 = 1;
    pub const ABORT_REQUEST: u8 = 2;
    pub const END_REQUEST: u8 = 3;
    pub const PARAMS: u8 = 4;
    pub const STDIN: u8 = 5;
    pub const STDOUT: u8 = 6;
    pub const STDERR: u8 = 7;
    pub const DATA: u8 = 8;
    pub const GET_VALUES: u8 = 9;
    pub const GET_VALUES_RESULT: u8 = 10;
    pub const UNKNOWN_TYPE: u8 = 11;
}

/// `FCGI_RESPONDER`, the role nginx, Apache and cgi-fcgi ask for.
pub const ROLE_RESPONDER: u16 = 1;
/// `FCGI_KEEP_CONN`: the web server keeps the connection after the request.
pub const FLAG_KEEP_CONN: u8 = 1;

/// `protocolStatus` of an END_REQUEST record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolStatus {
    RequestComplete = 0,
    CantMpxConn = 1,
    UnknownRole = 3,
}

/// A protocol violation: the connection is closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Malformed {
    #[error("record version {0}, not 1")]
    Version(u8),
    #[error("a {0}-byte BEGIN_REQUEST body, not 8")]
    BeginLength(usize),
    #[error("a name-value pair runs past the end of its stream")]
    TruncatedPair,
    #[error("a name or value longer than 2^31 bytes")]
    PairTooLong,
    #[error("a record of type {kind} for request {id}, which is not active")]
    Stray { kind: u8, id: u16 },
    #[error("a record of type {kind} for request {id} out of order")]
    OutOfOrder { kind: u8, id: u16 },
    #[error("a record of type {0}, which only an application sends")]
    WrongDirection(u8),
    #[error("the connection closed in the middle of a record")]
    Truncated,
}

/// One record as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: u8,
    pub request_id: u16,
    pub content: Bytes,
}

/// The body of a BEGIN_REQUEST record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    pub role: u16,
    pub keep_conn: bool,
}

impl Begin {
    pub fn parse(content: &[u8]) -> Result<Begin, Malformed> {
        if content.len() != 8 {
            return Err(Malformed::BeginLength(content.len()));
        }
        Ok(Begin {
            role: u16::from_be_bytes([content[0], content[1]]),
            keep_conn: content[2] & FLAG_KEEP_CONN != 0,
        })
    }
}

/// Reads records from a stream. `next` is cancel-safe: bytes read before a
/// cancelled call stay buffered for the next one, so it can sit in a
/// `select!` beside the response being written.
pub struct RecordReader<R> {
    io: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> RecordReader<R> {
    pub fn new(io: R) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(16 * 1024),
        }
    }

    /// The next record; None when the peer closed the connection between
    /// records.
    pub async fn next(&mut self) -> Result<Option<Record>, ReadError> {
        loop {
            if let Some(record) = take_record(&mut self.buf)? {
                return Ok(Some(record));
            }
            let read = self.io.read_buf(&mut self.buf).await?;
            if read == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(Malformed::Truncated.into())
                };
            }
        }
    }
}

/// Why reading a record failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Malformed(#[from] Malformed),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Takes one whole record off the front of `buf`, if it holds one.
fn take_record(buf: &mut BytesMut) -> Result<Option<Record>, Malformed> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[0] != VERSION {
        return Err(Malformed::Version(buf[0]));
    }
    let content_len = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
    let padding = usize::from(buf[6]);
    let total = HEADER_LEN + content_len + padding;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let kind = buf[1];
    let request_id = u16::from_be_bytes([buf[2], buf[3]]);
    buf.advance(HEADER_LEN);
    let content = buf.split_to(content_len).freeze();
    buf.advance(padding);
    Ok(Some(Record {
        kind,
        request_id,
        content,
    }))
}

/// Appends one record (no padding) to `out`. `content` must fit one
/// record; `stream` splits longer ones.
pub fn put_record(out: &mut BytesMut, kind: u8, request_id: u16, content: &[u8]) {
    debug_assert!(content.len() <= MAX_CONTENT);
    out.reserve(HEADER_LEN + content.len());
    out.put_u8(VERSION);
    out.put_u8(kind);
    out.put_u16(request_id);
    out.put_u16(content.len() as u16);
    out.put_u8(0);
    out.put_u8(0);
    out.put_slice(content);
}

/// Appends `data` as records of a stream (STDOUT), split at the record
/// size. Empty data appends nothing: an empty record ends a stream.
pub fn put_stream(out: &mut BytesMut, kind: u8, request_id: u16, data: &[u8]) {
    for chunk in data.chunks(MAX_CONTENT) {
        put_record(out, kind, request_id, chunk);
    }
}

/// Appends an END_REQUEST record.
pub fn put_end_request(out: &mut BytesMut, request_id: u16, status: ProtocolStatus) {
    let mut body = [0u8; 8];
    body[4] = status as u8;
    put_record(out, kind::END_REQUEST, request_id, &body);
}

/// Appends an UNKNOWN_TYPE record naming `unknown`.
pub fn put_unknown_type(out: &mut BytesMut, unknown: u8) {
    let mut body = [0u8; 8];
    body[0] = unknown;
    put_record(out, kind::UNKNOWN_TYPE, 0, &body);
}

/// Appends one name-value pair in the FastCGI encoding.
pub fn put_pair(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    for len in [name.len(), value.len()] {
        if len < 128 {
            out.put_u8(len as u8);
        } else {
            out.put_u32(len as u32 | 0x8000_0000);
        }
    }
    out.put_slice(name);
    out.put_slice(value);
}

/// Parses a whole stream of name-value pairs (PARAMS, GET_VALUES).
pub fn parse_pairs(data: &Bytes) -> Result<Vec<(Bytes, Bytes)>, Malformed> {
    let mut pairs = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let (name_len, used) = pair_length(&data[at..])?;
        at += used;
        let (value_len, used) = pair_length(&data[at..])?;
        at += used;
        let end_name = at.checked_add(name_len).ok_or(Malformed::PairTooLong)?;
        let end = end_name
            .checked_add(value_len)
            .ok_or(Malformed::PairTooLong)?;
        if end > data.len() {
            return Err(Malformed::TruncatedPair);
        }
        pairs.push((data.slice(at..end_name), data.slice(end_name..end)));
        at = end;
    }
    Ok(pairs)
}

/// A pair's length (one byte below 128, else four with the top bit set)
/// and the bytes it took.
fn pair_length(data: &[u8]) -> Result<(usize, usize), Malformed> {
    match data {
        [first, ..] if *first < 128 => Ok((usize::from(*first), 1)),
        [first, b, c, d, ..] => {
            let len = u32::from_be_bytes([first & 0x7f, *b, *c, *d]);
            Ok((usize::try_from(len).map_err(|_| Malformed::PairTooLong)?, 4))
        }
        _ => Err(Malformed::TruncatedPair),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, id: u16, content: &[u8], padding: u8) -> Vec<u8> {
        let mut out = vec![1, kind];
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&(content.len() as u16).to_be_bytes());
        out.push(padding);
        out.push(0);
        out.extend_from_slice(content);
        out.extend(std::iter::repeat_n(0, padding.into()));
        out
    }

    #[test]
    fn records_are_read_across_arbitrary_splits_and_padding_is_skipped() {
        let mut stream = record(kind::PARAMS, 1, b"abc", 5);
        stream.extend(record(kind::STDIN, 1, b"", 0));
        for split in 0..stream.len() {
            let mut buf = BytesMut::from(&stream[..split]);
            let mut seen = Vec::new();
            while let Some(r) = take_record(&mut buf).unwrap() {
                seen.push(r);
            }
            buf.extend_from_slice(&stream[split..]);
            while let Some(r) = take_record(&mut buf).unwrap() {
                seen.push(r);
            }
            assert_eq!(seen.len(), 2, "split at {split}");
            assert_eq!(&seen[0].content[..], b"abc");
            assert_eq!((seen[1].kind, seen[1].content.len()), (kind::STDIN, 0));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn a_wrong_version_is_malformed() {
        let mut buf = BytesMut::from(&[2u8, 1, 0, 1, 0, 0, 0, 0][..]);
        assert_eq!(take_record(&mut buf), Err(Malformed::Version(2)));
    }

    #[tokio::test]
    async fn a_connection_closed_inside_a_record_is_malformed_and_between_records_is_the_end() {
        let whole = record(kind::STDIN, 1, b"body", 0);
        let mut reader = RecordReader::new(&whole[..]);
        assert!(reader.next().await.unwrap().is_some());
        assert!(reader.next().await.unwrap().is_none());
        let mut reader = RecordReader::new(&whole[..10]);
        assert!(matches!(
            reader.next().await,
            Err(ReadError::Malformed(Malformed::Truncated))
        ));
    }

    #[test]
    fn pairs_round_trip_with_short_and_long_lengths() {
        let long = vec![b'x'; 300];
        let mut out = BytesMut::new();
        put_pair(&mut out, b"SCRIPT_NAME", b"/index.php");
        put_pair(&mut out, b"EMPTY", b"");
        put_pair(&mut out, &long, &long[..200]);
        let pairs = parse_pairs(&out.freeze()).unwrap();
        assert_eq!(pairs.len(), 3);
        assert_eq!(&pairs[0].0[..], b"SCRIPT_NAME");
        assert_eq!(&pairs[0].1[..], b"/index.php");
        assert_eq!(&pairs[1].1[..], b"");
        assert_eq!((pairs[2].0.len(), pairs[2].1.len()), (300, 200));
    }

    #[test]
    fn truncated_pairs_are_malformed() {
        let mut out = BytesMut::new();
        put_pair(&mut out, b"NAME", b"value");
        for cut in 1..out.len() {
            assert_eq!(
                parse_pairs(&out.clone().freeze().slice(..cut)),
                Err(Malformed::TruncatedPair),
                "cut at {cut}"
            );
        }
        // A four-byte length claiming 2 GiB.
        assert_eq!(
            parse_pairs(&Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0])),
            Err(Malformed::TruncatedPair)
        );
    }

    #[test]
    fn begin_request_bodies_are_checked() {
        assert_eq!(
            Begin::parse(&[0, 1, 1, 0, 0, 0, 0, 0]),
            Ok(Begin {
                role: ROLE_RESPONDER,
                keep_conn: true
            })
        );
        assert_eq!(Begin::parse(&[0, 1]), Err(Malformed::BeginLength(2)));
    }

    #[test]
    fn long_streams_are_split_into_records() {
        let mut out = BytesMut::new();
        put_stream(&mut out, kind::STDOUT, 7, &vec![b'a'; MAX_CONTENT + 10]);
        put_end_request(&mut out, 7, ProtocolStatus::RequestComplete);
        let mut seen = Vec::new();
        while let Some(r) = take_record(&mut out).unwrap() {
            seen.push(r);
        }
        let lens: Vec<usize> = seen.iter().map(|r| r.content.len()).collect();
        assert_eq!(lens, [MAX_CONTENT, 10, 8]);
        assert_eq!(seen[2].kind, kind::END_REQUEST);
        assert!(seen.iter().all(|r| r.request_id == 7));
    }
}
