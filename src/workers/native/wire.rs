//! The frame layout both directions share: a 4-byte big-endian length,
//! a kind byte, the payload; strings as a 4-byte length and their bytes.

/// The request head frame's kind (`frames` has the others).
pub(super) const HEAD: u8 = 1;

/// Starts a frame of `kind`; `finish` writes its length once known.
pub(super) fn begin(out: &mut Vec<u8>, kind: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, kind]);
    start
}

pub(super) fn finish(out: &mut [u8], start: usize) {
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

pub(super) fn put_str(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}
