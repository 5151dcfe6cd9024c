//! Finding the PHP binary that runs workers.

use std::path::{Path, PathBuf};

use crate::Error;

/// The PHP binary workers run under.
#[derive(Debug, Clone)]
pub struct PhpBinary {
    pub path: PathBuf,
    /// `php-cgi`: header(), setcookie() and sessions work as under PHP-FPM.
    /// The CLI binary cannot read back headers the app set natively.
    pub is_cgi: bool,
}

const INSTALL_HINT: &str = "install it with `apt-get install php-cgi` (Debian/Ubuntu) or name a PHP binary with --cgi-path";

impl PhpBinary {
    /// Uses `configured` if given, else `php-cgi` on PATH, else `php`.
    pub fn locate(configured: Option<&Path>) -> Result<Self, Error> {
        if let Some(path) = configured {
            let path = if path.components().count() == 1 {
                find_on_path(path.as_os_str().to_str().unwrap_or_default()).ok_or_else(|| {
                    Error::Php(format!(
                        "--cgi-path {}: not found on PATH; {INSTALL_HINT}",
                        path.display()
                    ))
                })?
            } else {
                path.to_path_buf()
            };
            if !is_executable(&path) {
                return Err(Error::Php(format!(
                    "--cgi-path {}: not an executable file; {INSTALL_HINT}",
                    path.display()
                )));
            }
            return Ok(Self::from_path(path));
        }
        if let Some(path) = find_on_path("php-cgi") {
            return Ok(Self::from_path(path));
        }
        if let Some(path) = find_on_path("php") {
            tracing::warn!(
                "php-cgi not found, running workers with {}: native header(), setcookie() and http_response_code() will not reach clients; {INSTALL_HINT}",
                path.display()
            );
            return Ok(Self::from_path(path));
        }
        Err(Error::Php(format!(
            "no PHP binary found (php-cgi or php on PATH); {INSTALL_HINT}"
        )))
    }

    fn from_path(path: PathBuf) -> Self {
        let is_cgi = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains("cgi"));
        Self { path, is_cgi }
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

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
