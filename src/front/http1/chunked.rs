//! The `chunked` transfer coding, decoded strictly.

use hyper::StatusCode;

use super::head::{field_line, is_tchar};
use super::{bad, refuse, Limits, Refusal};

/// Longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 4096;

/// Decodes a `chunked` body strictly (RFC 9112 7.1): 1 to 16 hex digits,
/// well-formed extensions (ignored), CRLF after every line and every
/// chunk's data, trailer fields checked like header fields and dropped.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: Chunked,
    trailer_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// What one step of the chunked decoder found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body data: this range of the input (empty when the step consumed
    /// only framing: a size line, a CRLF, a trailer field).
    Data(std::ops::Range<usize>),
    /// More input is needed.
    More,
    /// The body is complete.
    Done,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self {
            state: Chunked::Size,
            trailer_bytes: 0,
        }
    }

    /// Takes bytes from the front of `input`: returns how many were
    /// consumed and what they were. Call again with the rest until it
    /// returns `More` (then supply more input) or `Done`.
    pub fn step(&mut self, input: &[u8], limits: &Limits) -> Result<(usize, Decoded), Refusal> {
        match self.state {
            Chunked::Done => Ok((0, Decoded::Done)),
            Chunked::Size => {
                let Some(line) = line(input, MAX_CHUNK_LINE)? else {
                    return Ok((0, Decoded::More));
                };
                let size = chunk_size(&input[..line])?;
                self.state = if size == 0 {
                    Chunked::Trailers
                } else {
                    Chunked::Data(size)
                };
                Ok((line + 2, Decoded::Data(0..0)))
            }
            Chunked::Data(left) => {
                if input.is_empty() {
                    return Ok((0, Decoded::More));
                }
                let take = left.min(input.len() as u64) as usize;
                self.state = if take as u64 == left {
                    Chunked::DataEnd
                } else {
                    Chunked::Data(left - take as u64)
                };
                Ok((take, Decoded::Data(0..take)))
            }
            Chunked::DataEnd => match input {
                [b'\r', b'\n', ..] => {
                    self.state = Chunked::Size;
                    Ok((2, Decoded::Data(0..0)))
                }
                [] | [b'\r'] => Ok((0, Decoded::More)),
                _ => Err(bad("chunk data not followed by CRLF")),
            },
            Chunked::Trailers => {
                let Some(end) = line(input, limits.max_header_size)? else {
                    return Ok((0, Decoded::More));
                };
                if end == 0 {
                    self.state = Chunked::Done;
                    return Ok((2, Decoded::Done));
                }
                field_line(&input[..end])?;
                self.trailer_bytes += end + 2;
                if self.trailer_bytes > limits.max_header_size {
                    return Err(refuse(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "trailer section too large",
                    ));
                }
                Ok((end + 2, Decoded::Data(0..0)))
            }
        }
    }
}

/// The length of the CRLF-terminated line at the start of `input`, once
/// it is all there. A bare CR or LF, a NUL, or a line longer than `max`
/// is an error.
fn line(input: &[u8], max: usize) -> Result<Option<usize>, Refusal> {
    for (i, &b) in input.iter().enumerate() {
        match b {
            b'\n' => return Err(bad("bare LF line ending")),
            b'\r' => {
                return match input.get(i + 1) {
                    Some(b'\n') => Ok(Some(i)),
                    Some(_) => Err(bad("CR without LF")),
                    None => Ok(None),
                }
            }
            0 => return Err(bad("NUL byte in a chunk line")),
            _ if i >= max => return Err(bad("chunk line too long")),
            _ => {}
        }
    }
    if input.len() > max {
        return Err(bad("chunk line too long"));
    }
    Ok(None)
}

/// `chunk-size [ chunk-ext ]`, strictly; the extensions are ignored.
fn chunk_size(line: &[u8]) -> Result<u64, Refusal> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(bad("invalid chunk size"));
    }
    let size = u64::from_str_radix(std::str::from_utf8(&line[..digits]).unwrap_or("x"), 16)
        .map_err(|_| bad("invalid chunk size"))?;
    // chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
    let mut rest = &line[digits..];
    let ws = |s: &mut &[u8]| {
        while let [b' ' | b'\t', tail @ ..] = *s {
            *s = tail;
        }
    };
    let token = |s: &mut &[u8]| -> bool {
        let n = s.iter().take_while(|&&b| is_tchar(b)).count();
        *s = &s[n..];
        n > 0
    };
    loop {
        ws(&mut rest);
        match rest {
            [] => return Ok(size),
            [b';', tail @ ..] => rest = tail,
            _ => return Err(bad("invalid chunk extension")),
        }
        ws(&mut rest);
        if !token(&mut rest) {
            return Err(bad("invalid chunk extension"));
        }
        ws(&mut rest);
        if let [b'=', tail @ ..] = rest {
            rest = tail;
            ws(&mut rest);
            if let [b'"', tail @ ..] = rest {
                rest = quoted_string_tail(tail).ok_or(bad("invalid chunk extension"))?;
            } else if !token(&mut rest) {
                return Err(bad("invalid chunk extension"));
            }
        }
    }
}

/// After an opening quote: the input after the closing quote.
fn quoted_string_tail(mut s: &[u8]) -> Option<&[u8]> {
    loop {
        match s {
            [b'"', tail @ ..] => return Some(tail),
            [b'\\', escaped, tail @ ..]
                if *escaped == b'\t' || (b' '..=b'~').contains(escaped) || *escaped >= 0x80 =>
            {
                s = tail
            }
            [b, tail @ ..] if *b == b'\t' || (*b >= b' ' && *b != 0x7f && *b != b'\\') => s = tail,
            _ => return None,
        }
    }
}
