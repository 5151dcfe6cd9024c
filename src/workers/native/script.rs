//! `--bridge=script`: which PHP script a request runs, and the requests
//! that run none.
//!
//! Over HTTP the worker does what nginx's usual PHP site does
//! (`try_files $uri $uri/ /index.php$is_args$args` with a
//! `location ~ \.php(/|$)` that splits `PATH_INFO`): a path naming a
//! `.php` file runs it, with what follows `.php/` as `PATH_INFO`; a
//! directory runs its `index.php`; anything else runs the front
//! controller `/index.php`. Static files never get here for GET and HEAD:
//! the master serves them.
//!
//! Over FastCGI the web server names the script (`SCRIPT_FILENAME`), as
//! with php-fpm, and the worker checks it the way php-fpm does
//! (`security.limit_extensions`: 403 "Access denied."; a missing file:
//! 404 "File not found.").
//!
//! Either way only a `.php` file runs, only if its real path (symlinks
//! resolved) lies inside the document root and no part of that path
//! below the root starts with a dot. Refusals are answered by the worker
//! without starting a PHP request.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use percent_encoding::percent_decode;

/// The one extension that runs (php-fpm's `security.limit_extensions`).
const EXTENSION: &[u8] = b".php";
/// The directory index and the front controller.
const INDEX: &str = "index.php";

/// What runs for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `SCRIPT_NAME`: the script's path below the document root, from `/`.
    pub script_name: String,
    /// `PATH_INFO`: what followed the script's name in the URI.
    pub path_info: String,
}

/// A request that runs no script, answered as php-fpm or nginx would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub body: &'static str,
    /// A redirect's `Location` (bytes: the request's own path, which may
    /// hold bytes above 0x7F).
    pub location: Option<Vec<u8>>,
}

impl Refusal {
    fn not_found() -> Self {
        Self {
            status: 404,
            body: "File not found.\n",
            location: None,
        }
    }

    fn denied() -> Self {
        Self {
            status: 403,
            body: "Access denied.\n",
            location: None,
        }
    }

    fn status(status: u16, body: &'static str) -> Self {
        Self {
            status,
            body,
            location: None,
        }
    }
}

/// The document root of `--bridge=script`.
#[derive(Debug, Clone)]
pub struct DocRoot {
    /// Canonical (symlinks resolved).
    root: PathBuf,
}

impl DocRoot {
    /// `dir`, which must exist.
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        let root = dir.canonicalize()?;
        if !root.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(Self { root })
    }

    /// The canonical path, as `DOCUMENT_ROOT`.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The script an HTTP request runs (`target` is the request target).
    pub fn resolve(&self, method: &str, target: &[u8]) -> Result<Target, Refusal> {
        let (raw_path, query) = match target.iter().position(|&b| b == b'?') {
            Some(at) => (&target[..at], Some(&target[at + 1..])),
            None => (target, None),
        };
        if !raw_path.starts_with(b"/") {
            return Err(Refusal::status(400, "Bad Request\n"));
        }
        let decoded: Vec<u8> = percent_decode(raw_path).collect();
        if decoded.contains(&0) {
            return Err(Refusal::status(400, "Bad Request\n"));
        }
        // nginx's merge_slashes; `.` and `..` are dot segments and never
        // resolve to anything.
        let segments: Vec<&[u8]> = decoded
            .split(|&b| b == b'/')
            .filter(|s| !s.is_empty())
            .collect();
        let trailing_slash = decoded.ends_with(b"/");
        let dotted = |s: &&[u8]| s.starts_with(b".");
        // `/.well-known/…` is public (RFC 8615) but runs no script of its own.
        let hidden = segments.iter().any(dotted);
        if segments
            .iter()
            .any(|s| dotted(s) && *s != b".well-known".as_slice())
        {
            return Err(Refusal::not_found());
        }

        // `/a/b.php/c/d`: the first segment ending in .php is the script.
        if let Some(i) = segments
            .iter()
            .position(|s| s.len() > EXTENSION.len() && s.ends_with(EXTENSION))
        {
            if hidden {
                return Err(Refusal::not_found());
            }
            let script_name = join(&segments[..=i], false);
            let rest = &segments[i + 1..];
            let path_info = if rest.is_empty() {
                // `/a.php/` keeps its slash as PATH_INFO, as nginx's split does.
                if trailing_slash {
                    "/".into()
                } else {
                    String::new()
                }
            } else {
                join(rest, trailing_slash)
            };
            return match self.runnable(&script_name) {
                true => Ok(Target {
                    script_name,
                    path_info,
                }),
                false => Err(Refusal::not_found()),
            };
        }

        let path = join(&segments, false);
        let on_disk = self.root.join(relative(&path));
        if let Ok(meta) = std::fs::metadata(&on_disk) {
            let inside = self.inside(&on_disk);
            if meta.is_dir() && inside && !hidden {
                let dir = if segments.is_empty() {
                    "/".to_string()
                } else {
                    format!("{path}/")
                };
                let index = format!("{dir}{INDEX}");
                if self.runnable(&index) {
                    if !trailing_slash && !segments.is_empty() {
                        // As Apache's mod_dir: relative links in the page
                        // need the slash.
                        let mut location = raw_path.to_vec();
                        location.push(b'/');
                        if let Some(q) = query {
                            location.push(b'?');
                            location.extend_from_slice(q);
                        }
                        return Err(Refusal {
                            status: 301,
                            body: "",
                            location: Some(location),
                        });
                    }
                    return Ok(Target {
                        script_name: index,
                        path_info: String::new(),
                    });
                }
            } else if meta.is_file() && inside {
                if is_php_like(&on_disk) {
                    // .phtml, .phar, …: neither run nor shown.
                    return Err(Refusal::denied());
                }
                if method != "GET" && method != "HEAD" {
                    // A static file: the master answers GET and HEAD.
                    return Err(Refusal::status(405, "Method Not Allowed\n"));
                }
                return Err(Refusal::not_found());
            }
        }
        // The front controller.
        let front = format!("/{INDEX}");
        if self.runnable(&front) {
            Ok(Target {
                script_name: front,
                path_info: String::new(),
            })
        } else {
            Err(Refusal::not_found())
        }
    }

    /// Checks the `SCRIPT_FILENAME` a web server sent over FastCGI.
    pub fn check_filename(&self, filename: &[u8]) -> Result<(), Refusal> {
        if filename.is_empty() {
            return Err(Refusal::not_found());
        }
        if !filename.ends_with(EXTENSION) {
            return Err(Refusal::denied());
        }
        let path = Path::new(OsStr::from_bytes(filename));
        let Ok(real) = path.canonicalize() else {
            return Err(Refusal::not_found());
        };
        if !real.is_file() {
            return Err(Refusal::not_found());
        }
        match real.strip_prefix(&self.root) {
            Ok(below)
                if !has_dot_part(below) && real.as_os_str().as_bytes().ends_with(EXTENSION) =>
            {
                Ok(())
            }
            _ => Err(Refusal::denied()),
        }
    }

    /// Whether `script_name` (from `/`) is a `.php` file that may run.
    fn runnable(&self, script_name: &str) -> bool {
        let path = self.root.join(relative(script_name));
        let Ok(real) = path.canonicalize() else {
            return false;
        };
        real.is_file()
            && real.as_os_str().as_bytes().ends_with(EXTENSION)
            && real
                .strip_prefix(&self.root)
                .is_ok_and(|below| !has_dot_part(below))
    }

    /// Whether the real path of `path` lies inside the root.
    fn inside(&self, path: &Path) -> bool {
        path.canonicalize().is_ok_and(|real| {
            real.strip_prefix(&self.root)
                .is_ok_and(|b| !has_dot_part(b))
        })
    }
}

/// `/a/b` from segments (lossy for bytes that are not UTF-8: such a name
/// then names no file, and the request goes to the front controller).
fn join(segments: &[&[u8]], trailing_slash: bool) -> String {
    let mut out = String::new();
    for s in segments {
        out.push('/');
        out.push_str(&String::from_utf8_lossy(s));
    }
    if trailing_slash {
        out.push('/');
    }
    out
}

fn relative(path: &str) -> &Path {
    Path::new(path.trim_start_matches('/'))
}

fn has_dot_part(path: &Path) -> bool {
    path.components()
        .any(|c| c.as_os_str().as_bytes().starts_with(b"."))
}

/// Extensions PHP might run elsewhere; never sent as source.
fn is_php_like(path: &Path) -> bool {
    crate::front::static_files::is_php(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> (tempfile::TempDir, DocRoot) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("www");
        for d in ["sub", "lib/exe", ".git", "nophp", "outside"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in [
            "index.php",
            "doku.php",
            "sub/index.php",
            "lib/exe/css.php",
            ".git/x.php",
            "style.css",
            "old.phtml",
        ] {
            std::fs::write(root.join(f), "<?php\n").unwrap();
        }
        std::fs::write(dir.path().join("secret.php"), "<?php\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.php"), root.join("link.php")).unwrap();
        std::os::unix::fs::symlink(root.join("doku.php"), root.join("alias.php")).unwrap();
        let doc = DocRoot::new(&root).unwrap();
        (dir, doc)
    }

    fn run(script: &str, info: &str) -> Result<Target, Refusal> {
        Ok(Target {
            script_name: script.into(),
            path_info: info.into(),
        })
    }

    #[test]
    fn uris_map_to_scripts_like_nginx_try_files() {
        let (_dir, doc) = site();
        assert_eq!(
            doc.resolve("GET", b"/doku.php?id=start"),
            run("/doku.php", "")
        );
        assert_eq!(
            doc.resolve("GET", b"/doku.php/wiki/page"),
            run("/doku.php", "/wiki/page")
        );
        assert_eq!(doc.resolve("GET", b"/doku.php/"), run("/doku.php", "/"));
        assert_eq!(
            doc.resolve("GET", b"/lib//exe/css.php"),
            run("/lib/exe/css.php", "")
        );
        assert_eq!(doc.resolve("GET", b"/%64oku.php"), run("/doku.php", ""));
        assert_eq!(doc.resolve("GET", b"/"), run("/index.php", ""));
        assert_eq!(doc.resolve("GET", b"/sub/"), run("/sub/index.php", ""));
        assert_eq!(
            doc.resolve("GET", b"/sub?a=1")
                .unwrap_err()
                .location
                .as_deref(),
            Some(&b"/sub/?a=1"[..])
        );
        // Anything else: the front controller.
        assert_eq!(doc.resolve("GET", b"/no/such/page"), run("/index.php", ""));
        assert_eq!(doc.resolve("GET", b"/nophp/"), run("/index.php", ""));
        assert_eq!(
            doc.resolve("POST", b"/.well-known/x"),
            run("/index.php", "")
        );
        // A symlink inside the root to a script inside it runs.
        assert_eq!(doc.resolve("GET", b"/alias.php"), run("/alias.php", ""));
    }

    #[test]
    fn nothing_hidden_outside_or_not_php_runs() {
        let (_dir, doc) = site();
        let status = |target: &str| doc.resolve("GET", target.as_bytes()).unwrap_err().status;
        assert_eq!(status("/missing.php"), 404);
        assert_eq!(status("/missing.php/x"), 404);
        assert_eq!(status("/.git/x.php"), 404);
        assert_eq!(status("/.git/"), 404);
        assert_eq!(status("/sub/../doku.php"), 404);
        assert_eq!(status("/link.php"), 404, "a symlink out of the root");
        assert_eq!(status("/old.phtml"), 403);
        assert_eq!(status("/a%00.php"), 400);
        assert_eq!(status("/.well-known/x.php"), 404);
        assert_eq!(doc.resolve("POST", b"/style.css").unwrap_err().status, 405);
    }

    #[test]
    fn fastcgi_script_filenames_are_checked_like_php_fpm_and_kept_inside() {
        let (dir, doc) = site();
        let root = doc.path().to_path_buf();
        let name = |p: &Path| p.as_os_str().as_bytes().to_vec();
        assert_eq!(doc.check_filename(&name(&root.join("doku.php"))), Ok(()));
        assert_eq!(
            doc.check_filename(&name(&root.join("lib/exe/css.php"))),
            Ok(())
        );
        let status = |p: Vec<u8>| doc.check_filename(&p).unwrap_err().status;
        assert_eq!(status(name(&root.join("style.css"))), 403);
        assert_eq!(status(name(&root.join("missing.php"))), 404);
        assert_eq!(status(Vec::new()), 404);
        assert_eq!(status(name(&dir.path().join("secret.php"))), 403);
        assert_eq!(status(name(&root.join("link.php"))), 403);
        assert_eq!(status(name(&root.join(".git/x.php"))), 403);
        assert_eq!(
            doc.check_filename(&name(&root.join("sub/../doku.php"))),
            Ok(())
        );
    }
}
