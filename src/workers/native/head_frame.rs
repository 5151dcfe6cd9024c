//! The request head frame written straight from the master's parsed
//! request (`frames::ToWorker::Head` encodes through it too, so there is
//! one encoding).

use super::wire::{begin, finish, put_str, HEAD};

/// A request head frame's fields, encoded without building a
/// `RequestHead`: the master writes the client's header names and values
/// straight from its parsed request into the frame.
pub struct HeadFrame<'a> {
    pub method: &'a str,
    pub target: &'a [u8],
    pub protocol: &'a str,
    pub remote_addr: &'a str,
    pub remote_port: u16,
    pub server_addr: &'a str,
    pub server_port: u16,
    pub tls: bool,
    pub content_length: Option<u64>,
}

/// Where `HeadFrame::encode` takes the headers from.
pub struct HeaderSink<'a> {
    out: &'a mut Vec<u8>,
    count: u32,
}

impl HeaderSink<'_> {
    /// A header whose name is already as PHP should see it.
    pub fn exact(&mut self, name: &str, value: &[u8]) {
        put_str(self.out, name.as_bytes());
        put_str(self.out, value);
        self.count += 1;
    }

    /// A header with a lower-case name (as HTTP/2 and `http` keep them),
    /// written capitalised (`x-request-id` as `X-Request-Id`), as PHP's
    /// `getallheaders()` shows them under php-fpm behind nginx.
    pub fn lower(&mut self, name: &str, value: &[u8]) {
        self.out
            .extend_from_slice(&(name.len() as u32).to_be_bytes());
        // One `extend` over the bytes, not a `push` (with its capacity
        // check) per byte: this runs for every header of every request.
        let mut upper = true;
        self.out.extend(name.bytes().map(|b| {
            let out = if upper { b.to_ascii_uppercase() } else { b };
            upper = b == b'-';
            out
        }));
        put_str(self.out, value);
        self.count += 1;
    }
}

impl HeadFrame<'_> {
    /// Appends the frame: these fields, the headers `headers` gives the
    /// sink, then the FastCGI parameters (none for an HTTP request).
    pub fn encode<'c>(
        &self,
        out: &mut Vec<u8>,
        headers: impl FnOnce(&mut HeaderSink<'_>),
        cgi: impl ExactSizeIterator<Item = (&'c [u8], &'c [u8])>,
    ) {
        let start = begin(out, HEAD);
        put_str(out, self.method.as_bytes());
        put_str(out, self.target);
        put_str(out, self.protocol.as_bytes());
        put_str(out, self.remote_addr.as_bytes());
        out.extend_from_slice(&self.remote_port.to_be_bytes());
        put_str(out, self.server_addr.as_bytes());
        out.extend_from_slice(&self.server_port.to_be_bytes());
        let flags = u8::from(self.tls) | (u8::from(self.content_length.is_some()) << 1);
        out.push(flags);
        out.extend_from_slice(&self.content_length.unwrap_or(0).to_be_bytes());
        // The header count goes before the headers: written once known.
        let count_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let mut sink = HeaderSink { out, count: 0 };
        headers(&mut sink);
        let count = sink.count;
        out[count_at..count_at + 4].copy_from_slice(&count.to_be_bytes());
        out.extend_from_slice(&(cgi.len() as u32).to_be_bytes());
        for (name, value) in cgi {
            put_str(out, name);
            put_str(out, value);
        }
        finish(out, start);
    }
}
