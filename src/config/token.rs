//! The control token from a file (`--control-token-file`), the way that
//! keeps it out of `ps` (unlike `--control-token`) and out of every
//! process's environment (unlike `PPM_CONTROL_TOKEN`, which the master
//! then has to strip from each worker's).

use std::path::Path;

use crate::Error;

/// Reads a token file: its content without the trailing line break. A
/// missing, unreadable or empty file is an error naming the option.
pub fn read_token_file(path: &Path) -> Result<String, Error> {
    let fail = |message: String| Error::InvalidOption {
        option: "control-token-file",
        message: format!("{}: {message}", path.display()),
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let token = text.trim_end_matches(['\n', '\r']);
    if token.is_empty() {
        return Err(fail("is empty".into()));
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trailing_newline_is_trimmed_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "0123456789abcdef\n").unwrap();
        assert_eq!(read_token_file(&path).unwrap(), "0123456789abcdef");
        std::fs::write(&path, "\n").unwrap();
        let err = read_token_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("--control-token-file") && err.contains("empty"),
            "{err}"
        );
        let missing = dir.path().join("missing");
        let err = read_token_file(&missing).unwrap_err().to_string();
        assert!(
            err.contains("missing") && err.contains("cannot read"),
            "{err}"
        );
    }
}
