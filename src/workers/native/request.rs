//! What PHP needs to know of one request, computed from its
//! [`RequestHead`]: the `$_SERVER` entries (the same keys and values as
//! php-fpm behind nginx's upstream `fastcgi_params`, and as the php-cgi
//! runtime's `RequestGlobals.php`), the `getallheaders()` list, and the
//! fields of `SG(request_info)`. PHP adds `PHP_AUTH_*` and `REQUEST_TIME*`
//! itself.
//!
//! Everything lives in one arena of NUL-terminated strings, so the C side
//! gets stable pointers for as long as the request lasts.

use super::frames::RequestHead;

/// A string in the arena: offset and length (without its NUL).
#[derive(Debug, Clone, Copy, Default)]
pub struct Span {
    pub start: usize,
    pub len: usize,
}

/// One request, prepared for PHP.
#[derive(Debug, Default)]
pub struct Prepared {
    pub arena: Vec<u8>,
    pub method: Span,
    pub uri: Span,
    pub query: Span,
    pub content_type: Option<Span>,
    pub content_length: Option<u64>,
    pub cookie: Option<Span>,
    pub authorization: Option<Span>,
    pub path_translated: Span,
    pub server: Vec<(Span, Span)>,
    pub headers: Vec<(Span, Span)>,
}

/// Where the application's front controller is, for `$_SERVER`.
#[derive(Debug, Clone, Default)]
pub struct Script {
    pub document_root: String,
    pub script_name: String,
    /// `--bridge=script`: `PATH_INFO` (always set then, as nginx's
    /// `fastcgi_param PATH_INFO $fastcgi_path_info` does).
    pub path_info: Option<String>,
}

impl Prepared {
    /// The bytes of a span.
    pub fn get(&self, span: Span) -> &[u8] {
        &self.arena[span.start..span.start + span.len]
    }

    /// `$_SERVER` entries as byte pairs (for tests and logs).
    pub fn server_pairs(&self) -> Vec<(&[u8], &[u8])> {
        self.server
            .iter()
            .map(|(k, v)| (self.get(*k), self.get(*v)))
            .collect()
    }

    /// `getallheaders()` as byte pairs.
    pub fn header_pairs(&self) -> Vec<(&[u8], &[u8])> {
        self.headers
            .iter()
            .map(|(k, v)| (self.get(*k), self.get(*v)))
            .collect()
    }

    fn put(&mut self, bytes: &[u8]) -> Span {
        let start = self.arena.len();
        // An embedded NUL would cut the C string short; PHP would see a
        // shorter value than the length says. Values never carry one
        // legitimately (the front door refuses them in headers).
        self.arena
            .extend(bytes.iter().map(|&b| if b == 0 { b' ' } else { b }));
        self.arena.push(0);
        Span {
            start,
            len: bytes.len(),
        }
    }

    fn server_var(&mut self, key: &str, value: &[u8]) {
        let k = self.put(key.as_bytes());
        let v = self.put(value);
        self.server.push((k, v));
    }
}

/// Prepares `head` for PHP; `script` is not used for a request that came
/// over FastCGI, whose parameters say it all.
pub fn prepare(head: &RequestHead, script: &Script) -> Prepared {
    if !head.cgi.is_empty() {
        return from_cgi(head);
    }
    let mut p = Prepared {
        arena: Vec::with_capacity(1024),
        ..Prepared::default()
    };
    let query = head
        .target
        .iter()
        .position(|&b| b == b'?')
        .map_or(&[][..], |at| &head.target[at + 1..]);
    p.method = p.put(head.method.as_bytes());
    p.uri = p.put(&head.target);
    p.query = p.put(query);
    p.content_length = head.content_length;
    let script_filename = format!("{}{}", script.document_root, script.script_name);
    p.path_translated = p.put(script_filename.as_bytes());

    let content_type = joined(head, "content-type", b", ");
    let content_length = header(head, "content-length")
        .map(<[u8]>::to_vec)
        .or_else(|| head.content_length.map(|n| n.to_string().into_bytes()))
        .unwrap_or_default();
    if let Some(ct) = &content_type {
        p.content_type = Some(p.put(ct));
    }
    if let Some(cookie) = joined(head, "cookie", b"; ") {
        p.cookie = Some(p.put(&cookie));
    }
    if let Some(auth) = header(head, "authorization") {
        p.authorization = Some(p.put(auth));
    }

    p.server_var("QUERY_STRING", query);
    p.server_var("REQUEST_METHOD", head.method.as_bytes());
    p.server_var("CONTENT_TYPE", content_type.as_deref().unwrap_or_default());
    p.server_var("CONTENT_LENGTH", &content_length);
    // php-fpm's PHP_SELF: the script's name and what followed it. (nginx's
    // $document_uri is the script's name once try_files has checked it.)
    let self_path = format!(
        "{}{}",
        script.script_name,
        script.path_info.as_deref().unwrap_or_default()
    );
    p.server_var("SCRIPT_NAME", script.script_name.as_bytes());
    p.server_var("REQUEST_URI", &head.target);
    p.server_var("DOCUMENT_URI", script.script_name.as_bytes());
    p.server_var("DOCUMENT_ROOT", script.document_root.as_bytes());
    p.server_var("SERVER_PROTOCOL", head.protocol.as_bytes());
    p.server_var("REQUEST_SCHEME", if head.tls { b"https" } else { b"http" });
    if head.tls {
        p.server_var("HTTPS", b"on");
    }
    p.server_var("GATEWAY_INTERFACE", b"CGI/1.1");
    p.server_var("SERVER_SOFTWARE", b"ppm");
    p.server_var("REMOTE_ADDR", head.remote_addr.as_bytes());
    p.server_var("REMOTE_PORT", head.remote_port.to_string().as_bytes());
    p.server_var("SERVER_ADDR", head.server_addr.as_bytes());
    p.server_var("SERVER_PORT", head.server_port.to_string().as_bytes());
    let server_name = server_name(head);
    p.server_var("SERVER_NAME", server_name.as_bytes());
    p.server_var("SCRIPT_FILENAME", script_filename.as_bytes());
    if let Some(path_info) = &script.path_info {
        p.server_var("PATH_INFO", path_info.as_bytes());
    }

    // getallheaders() as php-fpm builds it: the two content keys first
    // (always present behind nginx), then one entry per HTTP_ key.
    let ct = p.server[2].1;
    let cl = p.server[3].1;
    let (ctk, clk) = (p.put(b"Content-Type"), p.put(b"Content-Length"));
    p.headers.push((ctk, ct));
    p.headers.push((clk, cl));

    for (key, value) in http_keys(head) {
        let name = fpm_header_name(&key);
        let k = p.put(key.as_bytes());
        let v = p.put(&value);
        p.server.push((k, v));
        let n = p.put(name.as_bytes());
        p.headers.push((n, v));
    }
    p.server_var("PHP_SELF", self_path.as_bytes());
    p
}

/// A request that came over FastCGI: `$_SERVER` is the web server's
/// parameters as sent (a repeated name: the last one wins when PHP
/// registers them), then `PHP_SELF` (`SCRIPT_NAME` + `PATH_INFO`), as
/// php-fpm registers them; `$_GET` is parsed from `QUERY_STRING`, and
/// `getallheaders()` is made of the `HTTP_*` parameters and the two
/// content ones, in order, as php-fpm makes it.
fn from_cgi(head: &RequestHead) -> Prepared {
    let mut p = Prepared {
        arena: Vec::with_capacity(2048),
        ..Prepared::default()
    };
    let param = |name: &str| {
        head.cgi
            .iter()
            .rev()
            .find(|(n, _)| n.as_slice() == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    };
    p.method = p.put(param("REQUEST_METHOD").unwrap_or(head.method.as_bytes()));
    p.uri = p.put(param("REQUEST_URI").unwrap_or(&head.target));
    p.query = p.put(param("QUERY_STRING").unwrap_or_default());
    p.content_length = head.content_length;
    p.path_translated = p.put(param("SCRIPT_FILENAME").unwrap_or_default());
    if let Some(ct) = param("CONTENT_TYPE").filter(|v| !v.is_empty()) {
        p.content_type = Some(p.put(ct));
    }
    if let Some(cookie) = param("HTTP_COOKIE") {
        p.cookie = Some(p.put(cookie));
    }
    if let Some(auth) = param("HTTP_AUTHORIZATION") {
        p.authorization = Some(p.put(auth));
    }
    for (name, value) in &head.cgi {
        let k = p.put(name);
        let v = p.put(value);
        p.server.push((k, v));
        let header = match std::str::from_utf8(name) {
            Ok("CONTENT_TYPE") => Some("Content-Type".to_string()),
            Ok("CONTENT_LENGTH") => Some("Content-Length".to_string()),
            Ok(key) if key.starts_with("HTTP_") && key.len() > 5 => Some(fpm_header_name(key)),
            _ => None,
        };
        if let Some(header) = header {
            let n = p.put(header.as_bytes());
            p.headers.push((n, v));
        }
    }
    let mut self_path = param("SCRIPT_NAME").unwrap_or_default().to_vec();
    self_path.extend_from_slice(param("PATH_INFO").unwrap_or_default());
    let k = p.put(b"PHP_SELF");
    let v = p.put(&self_path);
    p.server.push((k, v));
    p
}

/// `HTTP_*` keys in first-seen order, repeated headers joined (`; ` for
/// cookies, `, ` otherwise). Names with `_` are left out, like nginx and
/// Apache do, so `X_Forwarded_For` cannot pose as `X-Forwarded-For`.
fn http_keys(head: &RequestHead) -> Vec<(String, Vec<u8>)> {
    let mut keys: Vec<(String, Vec<u8>)> = Vec::with_capacity(head.headers.len());
    for (name, value) in &head.headers {
        if name.contains('_') {
            continue;
        }
        let key = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
        if let Some((_, joined)) = keys.iter_mut().find(|(k, _)| *k == key) {
            let sep: &[u8] = if key == "HTTP_COOKIE" { b"; " } else { b", " };
            joined.extend_from_slice(sep);
            joined.extend_from_slice(value);
        } else {
            keys.push((key, value.clone()));
        }
    }
    keys
}

/// `HTTP_ACCEPT_ENCODING` → `Accept-Encoding`, as php-fpm's getallheaders().
fn fpm_header_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = true;
    for c in key["HTTP_".len()..].chars() {
        if c == '_' {
            out.push('-');
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

fn header<'a>(head: &'a RequestHead, lower: &str) -> Option<&'a [u8]> {
    head.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(lower))
        .map(|(_, v)| v.as_slice())
}

fn joined(head: &RequestHead, lower: &str, sep: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for (_, value) in head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(lower))
    {
        match &mut out {
            Some(all) => {
                all.extend_from_slice(sep);
                all.extend_from_slice(value);
            }
            None => out = Some(value.clone()),
        }
    }
    out
}

/// The Host header without its port, else the server address.
fn server_name(head: &RequestHead) -> String {
    let host = header(head, "host")
        .map(|h| String::from_utf8_lossy(h).into_owned())
        .unwrap_or_default();
    if host.is_empty() {
        return head.server_addr.clone();
    }
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => host[..=end].to_string(),
            None => host,
        };
    }
    match host.split_once(':') {
        Some((name, _)) => name.to_string(),
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: "GET".into(),
            target: "/a/b?x=1&y[]=2".into(),
            protocol: "HTTP/1.1".into(),
            remote_addr: "10.0.0.1".into(),
            remote_port: 4000,
            server_addr: "127.0.0.1".into(),
            server_port: 9001,
            tls: false,
            content_length: None,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            cgi: Vec::new(),
        }
    }

    fn script() -> Script {
        Script {
            document_root: "/srv/app/public".into(),
            script_name: "/index.php".into(),
            path_info: None,
        }
    }

    fn server(p: &Prepared, key: &str) -> Option<String> {
        p.server_pairs()
            .into_iter()
            .rev()
            .find(|(k, _)| *k == key.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    #[test]
    fn server_keys_match_php_fpm_behind_nginx() {
        let p = prepare(
            &head(&[
                ("Host", "shop.test:8080"),
                ("Accept", "a"),
                ("accept", "b"),
                ("Cookie", "a=1"),
                ("Cookie", "b=2"),
                ("X_Sneaky", "no"),
            ]),
            &script(),
        );
        assert_eq!(server(&p, "QUERY_STRING").unwrap(), "x=1&y[]=2");
        assert_eq!(server(&p, "REQUEST_URI").unwrap(), "/a/b?x=1&y[]=2");
        assert_eq!(server(&p, "CONTENT_TYPE").unwrap(), "");
        assert_eq!(server(&p, "CONTENT_LENGTH").unwrap(), "");
        assert_eq!(server(&p, "SERVER_NAME").unwrap(), "shop.test");
        assert_eq!(server(&p, "HTTP_HOST").unwrap(), "shop.test:8080");
        assert_eq!(server(&p, "HTTP_ACCEPT").unwrap(), "a, b");
        assert_eq!(server(&p, "HTTP_COOKIE").unwrap(), "a=1; b=2");
        assert_eq!(server(&p, "HTTP_X_SNEAKY"), None);
        assert_eq!(server(&p, "HTTPS"), None);
        assert_eq!(server(&p, "REQUEST_SCHEME").unwrap(), "http");
        assert_eq!(
            server(&p, "SCRIPT_FILENAME").unwrap(),
            "/srv/app/public/index.php"
        );
        assert_eq!(server(&p, "PHP_SELF").unwrap(), "/index.php");
        assert_eq!(p.get(p.cookie.unwrap()), b"a=1; b=2");
        assert_eq!(p.get(p.query), b"x=1&y[]=2");
        // Every span is NUL-terminated for C.
        for (k, v) in &p.server {
            assert_eq!(p.arena[k.start + k.len], 0);
            assert_eq!(p.arena[v.start + v.len], 0);
        }
    }

    #[test]
    fn getallheaders_names_are_capitalised_like_php_fpm() {
        let p = prepare(
            &head(&[("accept-encoding", "gzip"), ("X-REQUEST-ID", "7")]),
            &script(),
        );
        let names: Vec<String> = p
            .header_pairs()
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "Content-Type",
                "Content-Length",
                "Accept-Encoding",
                "X-Request-Id"
            ]
        );
    }

    #[test]
    fn tls_body_length_and_ipv6_hosts() {
        let mut h = head(&[("Host", "[::1]:8443"), ("Content-Type", "text/plain")]);
        h.tls = true;
        h.content_length = Some(5);
        h.protocol = "HTTP/1.0".into();
        let p = prepare(&h, &script());
        assert_eq!(server(&p, "HTTPS").unwrap(), "on");
        assert_eq!(server(&p, "REQUEST_SCHEME").unwrap(), "https");
        assert_eq!(server(&p, "SERVER_NAME").unwrap(), "[::1]");
        assert_eq!(server(&p, "CONTENT_LENGTH").unwrap(), "5");
        assert_eq!(server(&p, "CONTENT_TYPE").unwrap(), "text/plain");
    }

    #[test]
    fn without_a_host_the_server_name_is_the_address() {
        let p = prepare(&head(&[]), &script());
        assert_eq!(server(&p, "SERVER_NAME").unwrap(), "127.0.0.1");
    }

    #[test]
    fn fastcgi_parameters_are_the_server_variables_as_sent() {
        let mut h = head(&[("Host", "example.test")]);
        h.cgi = [
            ("FCGI_ROLE", "RESPONDER"),
            ("SCRIPT_NAME", "/index.php"),
            ("PATH_INFO", "/x"),
            ("QUERY_STRING", "q=1"),
            ("REQUEST_URI", "/index.php/x?q=1"),
            ("SERVER_SOFTWARE", "nginx"),
            ("SERVER_SOFTWARE", "nginx/2"),
            ("SCRIPT_FILENAME", "/srv/www/index.php"),
            ("CONTENT_TYPE", "text/plain"),
            ("HTTP_X_REQUEST_ID", "7"),
            ("HTTP_COOKIE", "a=1"),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
        let p = prepare(&h, &script());
        let pairs = p.server_pairs();
        assert_eq!(pairs[0], (&b"FCGI_ROLE"[..], &b"RESPONDER"[..]));
        assert_eq!(
            pairs.last().unwrap(),
            &(&b"PHP_SELF"[..], &b"/index.php/x"[..])
        );
        assert!(server(&p, "HTTP_HOST").is_none(), "only the parameters");
        assert!(server(&p, "GATEWAY_INTERFACE").is_none());
        assert_eq!(p.get(p.query), b"q=1");
        assert_eq!(p.get(p.uri), b"/index.php/x?q=1");
        // PHP registers them in order: the last of a repeated name wins.
        let software: Vec<_> = pairs
            .iter()
            .filter(|(k, _)| *k == b"SERVER_SOFTWARE")
            .collect();
        assert_eq!(software.last().unwrap().1, b"nginx/2");
        // php-fpm's request info and getallheaders() come from them too.
        assert_eq!(p.get(p.path_translated), b"/srv/www/index.php");
        assert_eq!(p.get(p.cookie.unwrap()), b"a=1");
        assert_eq!(p.get(p.content_type.unwrap()), b"text/plain");
        let headers: Vec<_> = p.header_pairs();
        assert_eq!(
            headers,
            [
                (&b"Content-Type"[..], &b"text/plain"[..]),
                (&b"X-Request-Id"[..], &b"7"[..]),
                (&b"Cookie"[..], &b"a=1"[..]),
            ]
        );
    }
}
