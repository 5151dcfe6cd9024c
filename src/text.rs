//! Small text writers for the request path. Every proxied request writes
//! numbers, addresses and dates into its worker frame, its response head
//! and its access-log line; `core::fmt` and a fresh `String` for each cost
//! more than the rest of the master's work on a small request (measured
//! with callgrind: about a fifth of its instructions), so these write
//! into a buffer the caller already has.

use std::cell::RefCell;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Appends `n` in decimal.
pub fn push_u64(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0; 20];
    out.extend_from_slice(decimal(&mut buf, n));
}

/// `n` in decimal, written into `buf`.
pub fn decimal(buf: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Appends `n` as at least `width` digits, zero-padded.
pub fn push_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut buf = [0; 20];
    let digits = decimal(&mut buf, n);
    out.extend(std::iter::repeat_n(
        b'0',
        width.saturating_sub(digits.len()),
    ));
    out.extend_from_slice(digits);
}

/// Appends `n` in lower-case hexadecimal, 16 digits.
pub fn push_hex16(out: &mut Vec<u8>, n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(DIGITS[((n >> (shift * 4)) & 0xf) as usize]);
    }
}

/// Appends an address as `Display` writes it (IPv4 without `fmt`).
pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// The address as `Display` writes it.
pub fn ip_text(ip: IpAddr) -> String {
    let mut out = Vec::with_capacity(15);
    push_ip(&mut out, ip);
    String::from_utf8(out).unwrap_or_default()
}

/// A duration in seconds with three decimals, rounded to the millisecond
/// (`1.234`), as nginx's `$request_time`.
pub fn push_seconds(out: &mut Vec<u8>, d: std::time::Duration) {
    let millis = (d.as_nanos() + 500_000) / 1_000_000;
    push_u64(out, (millis / 1000) as u64);
    out.push(b'.');
    push_padded(out, (millis % 1000) as u64, 3);
}

/// A text computed from the current second, computed once per second on
/// each thread (the `Date` header, the access log's time).
pub struct PerSecond {
    cache: RefCell<(u64, String)>,
}

impl PerSecond {
    pub const fn new() -> Self {
        PerSecond {
            cache: RefCell::new((u64::MAX, String::new())),
        }
    }

    /// Appends the text for `time`, made by `make` when its second differs
    /// from the last one asked for.
    pub fn push(
        &self,
        out: &mut Vec<u8>,
        time: SystemTime,
        make: impl FnOnce(SystemTime) -> String,
    ) {
        let second = time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let mut cache = self.cache.borrow_mut();
        if cache.0 != second {
            *cache = (second, make(time));
        }
        out.extend_from_slice(cache.1.as_bytes());
    }
}

impl Default for PerSecond {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn numbers_are_written_as_fmt_writes_them() {
        for n in [0, 7, 10, 443, 65_535, u64::MAX] {
            assert_eq!(text(|o| push_u64(o, n)), n.to_string());
            assert_eq!(text(|o| push_hex16(o, n)), format!("{n:016x}"));
        }
        assert_eq!(text(|o| push_padded(o, 7, 3)), "007");
        assert_eq!(text(|o| push_padded(o, 1234, 3)), "1234");
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "203.0.113.255",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn seconds_are_rounded_to_the_millisecond() {
        let s = |d| text(|o| push_seconds(o, d));
        assert_eq!(s(Duration::from_millis(1234)), "1.234");
        assert_eq!(s(Duration::from_micros(500)), "0.001");
        assert_eq!(s(Duration::from_micros(499)), "0.000");
        assert_eq!(s(Duration::from_secs(61)), "61.000");
    }

    #[test]
    fn per_second_texts_are_made_once_a_second() {
        let cache = PerSecond::new();
        let made = std::cell::Cell::new(0);
        let at = UNIX_EPOCH + Duration::from_millis(1_000_100);
        for offset in [0, 200, 800] {
            let t = text(|o| {
                cache.push(o, at + Duration::from_millis(offset), |t| {
                    made.set(made.get() + 1);
                    format!("{:?}", t.duration_since(UNIX_EPOCH).unwrap().as_secs())
                })
            });
            assert_eq!(t, "1000");
        }
        assert_eq!(made.get(), 1);
        let t = text(|o| cache.push(o, at + Duration::from_secs(1), |_| "next".into()));
        assert_eq!(t, "next");
    }
}
