//! Request-target bytes that are not URI characters but that nginx (and so
//! PHP-FPM behind it) accepts as they are: `"`, `<`, `>`, `\`, `^`, `` ` ``,
//! `{`, `|`, `}` and bytes above 0x7F (UTF-8). Real clients send them
//! (`?q=O'Reilly`, `?q=<b>`, `/café`), and PHP must see them byte for byte
//! in `REQUEST_URI` and `QUERY_STRING`.
//!
//! `http::Uri` refuses most of them, and the proxy path carries requests
//! as `http::Request`. So the front door percent-encodes those bytes for
//! the `Uri` (routing, logs, static files see a valid URI) and hands the
//! raw origin-form to the worker in the master's private
//! `X-Ppm-Request-Target` header, which the worker uses as the target.
//! Control characters, spaces and `#` stay refused by the reader.

use std::borrow::Cow;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};

/// The private header carrying the raw request target to the worker.
pub const RAW_TARGET: HeaderName = HeaderName::from_static("x-ppm-request-target");

/// Whether `byte` may appear in a request target as sent (before checks of
/// its form): visible ASCII except `#` is decided elsewhere, and any byte
/// above 0x7F. Controls (0x00-0x1F, 0x7F) and the space are refused.
pub fn is_target_byte(byte: u8) -> bool {
    matches!(byte, b'!'..=b'~' | 0x80..=0xFF)
}

/// Whether `byte` must be percent-encoded for `http::Uri`.
fn needs_encoding(byte: u8) -> bool {
    matches!(
        byte,
        b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}' | 0x80..=0xFF
    )
}

/// `target` with the bytes `http::Uri` refuses percent-encoded; borrowed
/// when there are none.
pub fn encode(target: &[u8]) -> Cow<'_, [u8]> {
    if !target.iter().any(|&b| needs_encoding(b)) {
        return Cow::Borrowed(target);
    }
    let mut out = Vec::with_capacity(target.len() + 16);
    for &b in target {
        if needs_encoding(b) {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    Cow::Owned(out)
}

/// The origin-form (path and query) of a raw absolute-form target such as
/// `http://host/a<b?c`, as `http::Uri` would split it.
pub fn origin_form(absolute: &[u8]) -> Cow<'_, [u8]> {
    let after_scheme = absolute
        .windows(3)
        .position(|w| w == b"://")
        .map_or(absolute, |i| &absolute[i + 3..]);
    match after_scheme.iter().position(|&b| b == b'/' || b == b'?') {
        Some(i) if after_scheme[i] == b'/' => Cow::Borrowed(&after_scheme[i..]),
        Some(i) => {
            let mut out = b"/".to_vec();
            out.extend_from_slice(&after_scheme[i..]);
            Cow::Owned(out)
        }
        None => Cow::Borrowed(b"/"),
    }
}

/// Records the raw origin-form target `raw` in `headers` when it differs
/// from what the `Uri` holds; any client-sent header of that name goes.
pub fn record_raw(headers: &mut HeaderMap, raw: &[u8]) {
    headers.remove(RAW_TARGET);
    if matches!(encode(raw), Cow::Owned(_)) {
        if let Ok(value) = HeaderValue::from_bytes(raw) {
            headers.insert(RAW_TARGET, value);
        }
    }
}

/// The raw target of a request whose URI path and query are
/// `path_and_query`, taken from `headers` only if it encodes to exactly
/// that: so a client sending the header itself (over HTTP/2, say) can only
/// state what its URI already says.
pub fn raw_for(headers: &HeaderMap, path_and_query: &str) -> Option<HeaderValue> {
    let value = headers.get(RAW_TARGET)?;
    (encode(value.as_bytes()).as_ref() == path_and_query.as_bytes()).then(|| value.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_bytes_are_encoded_for_the_uri_and_others_kept() {
        let raw = "/caf\u{e9}?q=O'Reilly&x=<b>\"{|}\\^`".as_bytes();
        let encoded = encode(raw);
        let text = std::str::from_utf8(&encoded).unwrap();
        assert_eq!(text, "/caf%C3%A9?q=O'Reilly&x=%3Cb%3E%22%7B%7C%7D%5C%5E%60");
        assert!(hyper::Uri::try_from(text).is_ok());
        assert!(matches!(encode(b"/a?b=%41"), Cow::Borrowed(_)));
    }

    #[test]
    fn controls_and_space_are_not_target_bytes() {
        for b in (0u8..=0x20).chain([0x7F]) {
            assert!(!is_target_byte(b), "{b:#x}");
        }
        assert!(is_target_byte(b'<') && is_target_byte(0xC3));
    }

    #[test]
    fn a_raw_target_is_believed_only_when_it_matches_the_uri() {
        let mut headers = HeaderMap::new();
        headers.insert(RAW_TARGET, HeaderValue::from_static("/spoofed"));
        record_raw(&mut headers, b"/plain");
        assert!(headers.get(RAW_TARGET).is_none(), "client's header removed");
        record_raw(&mut headers, b"/a<b");
        assert_eq!(raw_for(&headers, "/a%3Cb").unwrap(), "/a<b");
        assert!(raw_for(&headers, "/other").is_none());
    }

    #[test]
    fn the_origin_form_of_an_absolute_target() {
        assert_eq!(origin_form(b"http://h/a<b?c").as_ref(), b"/a<b?c");
        assert_eq!(origin_form(b"http://h?c").as_ref(), b"/?c");
        assert_eq!(origin_form(b"http://h").as_ref(), b"/");
    }
}
