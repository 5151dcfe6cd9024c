//! `--static-directory`: files the master answers itself, without a worker.
//!
//! tower-http's `ServeDir` does the serving: `Last-Modified` and
//! `If-Modified-Since`, byte ranges (206, 416), precompressed `.br` and
//! `.gz` variants when the client accepts them, MIME types, `index.html`
//! for directories. Around it this module decides what may be served at
//! all, before `ServeDir` sees the request, and adds what `ServeDir`
//! lacks, a weak `ETag` (size and modification time) with
//! `If-None-Match` → 304.
//!
//! What is never served, and so goes on to PHP like any other request:
//! anything but GET and HEAD; a path with a `..` or `.` segment, a
//! backslash or a NUL once percent-decoded; a dotfile or anything under a
//! dot directory (unless `--static-dotfiles`); a `.php` (or `.phtml`,
//! `.phar`, …) file; anything whose real path (symlinks resolved) is not
//! inside the directory; a directory without `index.html`; anything that
//! is not there. A miss costs a `stat` and falls through to the app.

use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use percent_encoding::percent_decode_str;
use tower_http::services::ServeDir;

use crate::body::ProxyBody;

/// File extensions PHP would run; their source is never sent.
const PHP_EXTENSIONS: [&str; 10] = [
    "php", "phtml", "phar", "php3", "php4", "php5", "php7", "php8", "phps", "pht",
];

/// The static file server of one directory.
pub struct StaticFiles {
    root: PathBuf,
    dotfiles: bool,
    serve: ServeDir,
}

impl StaticFiles {
    /// Serves `dir`, which must exist.
    pub fn new(dir: &Path, dotfiles: bool) -> std::io::Result<Self> {
        let root = dir.canonicalize()?;
        if !root.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "not a directory",
            ));
        }
        let serve = ServeDir::new(&root)
            .precompressed_br()
            .precompressed_gzip()
            .append_index_html_on_directories(true);
        Ok(Self {
            root,
            dotfiles,
            serve,
        })
    }

    /// The answer to a request, or None when it is not for a static file
    /// (it goes to PHP then).
    pub async fn serve(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Option<Response<ProxyBody>> {
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        let segments = self.segments(uri.path())?;
        // A script (or a path through one, `/a.php/b`, which nginx's
        // `\.php(/|$)` sends to PHP too) is never sent: no trip to the
        // disk for it.
        if segments.iter().any(|s| is_php(Path::new(s))) {
            return None;
        }
        let mut candidate = self.root.clone();
        candidate.extend(&segments);
        let root = self.root.clone();
        let dotfiles = self.dotfiles;
        // One trip to the blocking pool for every check on the disk.
        let meta = tokio::task::spawn_blocking(move || {
            let meta = std::fs::metadata(&candidate).ok()?;
            let real = candidate.canonicalize().ok()?;
            if !allowed(real.strip_prefix(&root).ok()?, dotfiles) {
                return None;
            }
            let (file, meta) = if meta.is_dir() {
                let index = real.join("index.html");
                let meta = std::fs::metadata(&index).ok()?;
                (index, meta)
            } else {
                (real, meta)
            };
            (meta.is_file() && !is_php(&file)).then_some(meta)
        })
        .await
        .ok()??;

        let mut request = Request::new(Empty::<Bytes>::new());
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri.clone();
        *request.headers_mut() = headers.clone();
        let if_none_match = headers.get(header::IF_NONE_MATCH).cloned();
        if if_none_match.is_some() {
            // If-None-Match decides alone (RFC 9110 13.2.2).
            request.headers_mut().remove(header::IF_MODIFIED_SINCE);
        }
        let response = self.serve.clone().try_call(request).await.ok()?;
        if response.status() == StatusCode::NOT_FOUND {
            return None;
        }
        let (mut parts, body) = response.into_parts();
        if parts.status.is_success() || parts.status == StatusCode::NOT_MODIFIED {
            let tag = etag(&meta, parts.headers.get(header::CONTENT_ENCODING));
            if let Ok(value) = HeaderValue::from_str(&tag) {
                parts.headers.insert(header::ETAG, value);
            }
            let fresh = if_none_match
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .is_some_and(|list| matches_etag(list, &tag));
            if fresh && parts.status.is_success() {
                parts.status = StatusCode::NOT_MODIFIED;
                for name in [
                    header::CONTENT_LENGTH,
                    header::CONTENT_RANGE,
                    header::CONTENT_TYPE,
                    header::ACCEPT_RANGES,
                ] {
                    parts.headers.remove(name);
                }
                let empty = Empty::new().map_err(|never| match never {}).boxed_unsync();
                return Some(Response::from_parts(parts, empty));
            }
        }
        Some(Response::from_parts(
            parts,
            body.map_err(Into::into).boxed_unsync(),
        ))
    }

    /// The decoded path segments of a request path, or None when the path
    /// may not name a static file.
    fn segments(&self, path: &str) -> Option<Vec<String>> {
        let decoded = percent_decode_str(path).decode_utf8().ok()?;
        if decoded.contains(['\0', '\\']) {
            return None;
        }
        let mut segments = Vec::new();
        for segment in decoded.split('/').filter(|s| !s.is_empty()) {
            if segment == "." || segment == ".." || (segment.starts_with('.') && !self.dotfiles) {
                return None;
            }
            segments.push(segment.to_string());
        }
        Some(segments)
    }
}

/// Whether a real path inside the root may be served: nothing but plain
/// names, none of them a dotfile (unless allowed).
fn allowed(inside: &Path, dotfiles: bool) -> bool {
    inside.components().all(|c| match c {
        Component::Normal(name) => dotfiles || !name.to_string_lossy().starts_with('.'),
        _ => false,
    })
}

pub(crate) fn is_php(path: &Path) -> bool {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| PHP_EXTENSIONS.contains(&e.as_str()))
}

/// A weak validator from the file's size and modification time, per
/// content coding (a gzip variant is a different representation).
fn etag(meta: &std::fs::Metadata, encoding: Option<&HeaderValue>) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let suffix = encoding
        .and_then(|e| e.to_str().ok())
        .map(|e| format!("-{e}"))
        .unwrap_or_default();
    format!("W/\"{:x}-{:x}{suffix}\"", meta.len(), mtime)
}

/// `If-None-Match` against `tag`, with the weak comparison (RFC 9110 8.8.3.2).
fn matches_etag(list: &str, tag: &str) -> bool {
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let tag = opaque(tag);
    list.split(',')
        .any(|candidate| candidate.trim() == "*" || opaque(candidate) == tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(dotfiles: bool) -> (tempfile::TempDir, StaticFiles) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("public");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::create_dir_all(root.join("noindex")).unwrap();
        std::fs::write(root.join("a.txt"), "hello").unwrap();
        std::fs::write(root.join("index.php"), "<?php secret").unwrap();
        std::fs::write(root.join("INDEX.PHP"), "<?php secret").unwrap();
        std::fs::write(root.join(".env"), "SECRET=1").unwrap();
        std::fs::write(root.join(".git/config"), "secret").unwrap();
        std::fs::write(root.join("sub/index.html"), "<p>sub</p>").unwrap();
        std::fs::write(dir.path().join("outside.txt"), "secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside.txt"), root.join("link.txt")).unwrap();
        std::os::unix::fs::symlink(root.join("index.php"), root.join("code.txt")).unwrap();
        let files = StaticFiles::new(&root, dotfiles).unwrap();
        (dir, files)
    }

    async fn get(files: &StaticFiles, path: &str) -> Option<StatusCode> {
        let uri: Uri = path.parse().unwrap();
        files
            .serve(&Method::GET, &uri, &HeaderMap::new())
            .await
            .map(|r| r.status())
    }

    #[tokio::test]
    async fn serves_files_and_refuses_what_it_must() {
        let (_dir, files) = server(false);
        assert_eq!(get(&files, "/a.txt").await, Some(StatusCode::OK));
        assert_eq!(get(&files, "/sub/").await, Some(StatusCode::OK));
        for refused in [
            "/index.php",
            "/INDEX.PHP",
            "/code.txt",
            "/.env",
            "/.git/config",
            "/%2e%2e/outside.txt",
            "/sub/..%2f..%2foutside.txt",
            "/link.txt",
            "/noindex/",
            "/missing",
            "/a.txt%00",
        ] {
            assert_eq!(get(&files, refused).await, None, "{refused}");
        }
        let (_dir, files) = server(true);
        assert_eq!(get(&files, "/.env").await, Some(StatusCode::OK));
    }

    #[test]
    fn etags_compare_weakly() {
        assert!(matches_etag("W/\"1-2\"", "W/\"1-2\""));
        assert!(matches_etag("\"x\", \"1-2\"", "W/\"1-2\""));
        assert!(matches_etag("*", "W/\"1-2\""));
        assert!(!matches_etag("W/\"1-3\"", "W/\"1-2\""));
    }
}
