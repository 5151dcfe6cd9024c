//! What ppm reads of PHP's own settings.

/// A php.ini size (`128M`, `1G`, `512K`, `1048576`) in bytes, as PHP reads
/// it; None for `-1` (no limit) and for text PHP would not take as a size.
pub fn ini_bytes(setting: &str) -> Option<u64> {
    let text = setting.trim();
    let (digits, unit) = match text.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&text[..i], Some(c.to_ascii_lowercase())),
        _ => (text, None),
    };
    let number: i64 = digits.trim().parse().ok()?;
    let number = u64::try_from(number).ok()?;
    let factor: u64 = match unit {
        None => 1,
        Some('k') => 1 << 10,
        Some('m') => 1 << 20,
        Some('g') => 1 << 30,
        Some(_) => return None,
    };
    number.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::ini_bytes;

    #[test]
    fn ini_sizes_read_like_php() {
        assert_eq!(ini_bytes("128M"), Some(128 << 20));
        assert_eq!(ini_bytes("1g"), Some(1 << 30));
        assert_eq!(ini_bytes("512K"), Some(512 << 10));
        assert_eq!(ini_bytes("1048576"), Some(1 << 20));
        assert_eq!(ini_bytes("-1"), None);
        assert_eq!(ini_bytes(""), None);
        assert_eq!(ini_bytes("lots"), None);
    }
}
