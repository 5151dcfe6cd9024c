//! The PHP side of the worker (`bridges/`: the worker script and the
//! bridges), embedded in the binary and written to the run
//! directory at start, so workers never depend on the source tree.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/runtime_files.rs"));
}

/// Writes the runtime into `dir/runtime/` and returns the entry script.
pub fn install(dir: &Path) -> io::Result<PathBuf> {
    let root = dir.join("runtime");
    for (name, contents) in embedded::FILES {
        let path = root.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, contents)?;
    }
    Ok(root.join("native.php"))
}

/// Names of the embedded files, relative to `bridges/`.
pub fn file_names() -> impl Iterator<Item = &'static str> {
    embedded::FILES.iter().map(|(name, _)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_php_file_in_bridges_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("bridges");
        let embedded: Vec<&str> = file_names().collect();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "php") {
                    let rel = path
                        .strip_prefix(&root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    assert!(
                        embedded.contains(&rel.as_str()),
                        "{rel} missing from bridges/FILES"
                    );
                }
            }
        }
        assert!(embedded.contains(&"native.php"));
    }

    #[test]
    fn install_writes_the_entry_script() {
        let dir = tempfile::tempdir().unwrap();
        let entry = install(dir.path()).unwrap();
        assert!(entry.is_file());
    }
}
