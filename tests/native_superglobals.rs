//! The native runtime fills PHP's request state exactly as PHP-FPM does,
//! including what the php-cgi runtime could not: `php://input`,
//! `is_uploaded_file()`, `filter_input()`, `enable_post_data_reading=0`,
//! `expose_php`, PHP's own request startup warnings (malformed multipart
//! included), session upload progress, `variables_order`,
//! `register_argc_argv`, `getenv()` of the request's variables, and
//! mbstring's input translation (`mb_http_input()`).
//!
//! Every request goes to `ppm worker` running the `basic`
//! fixture through the callable bridge, and to nginx + php-fpm8.2 running
//! the same callable (tests/common/fpm.rs); the fixture's `/dump?full`
//! answers must be identical. Only the script name differs by nature.

mod common;

use common::fpm::*;
use reqwest::blocking::Client;
use reqwest::header::{CONTENT_TYPE, COOKIE};

fn form(
    content_type: &'static str,
    body: &'static str,
) -> impl Fn(&Client, &str) -> reqwest::blocking::RequestBuilder {
    move |client: &Client, base: &str| {
        client
            .post(format!("{base}/dump?full&a=query&both=query"))
            .header(CONTENT_TYPE, content_type)
            .header(COOKIE, "c=cookie; both=cookie")
            .body(body)
    }
}

/// A POST of `body` (with its Content-Type) to `/dump?full`.
fn post_dump(
    client: &Client,
    base: &str,
    (content_type, body): (String, Vec<u8>),
) -> reqwest::blocking::RequestBuilder {
    client
        .post(format!("{base}/dump?full"))
        .header(CONTENT_TYPE, content_type)
        .body(body)
}

#[test]
fn get_post_cookies_and_php_input_match_php_fpm() {
    let both = Both::native(&[]);
    both.assert_same_dumps(&[
        ("GET with arrays", &|client, base| {
            client
                .get(format!(
                    "{base}/dump?full&a.b=1&c[]=2&d[x][y]=3&e+f=4&r=1&r=2"
                ))
                .header(
                    COOKIE,
                    "plain=v; eq=a=b; plus=a+b; dup=1; dup=2; arr[k]=x; c=1",
                )
        }),
        (
            "POST urlencoded",
            &form(
                "application/x-www-form-urlencoded",
                "a=body&x[]=1&x[]=2&both=body",
            ),
        ),
        (
            "POST JSON (php://input)",
            &form("application/json", r#"{"a":1,"b":[true]}"#),
        ),
        ("PUT urlencoded", &|client, base| {
            client
                .put(format!("{base}/dump?full"))
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body("a=1&b=2")
        }),
        ("PATCH JSON", &|client, base| {
            client
                .patch(format!("{base}/dump?full"))
                .header(CONTENT_TYPE, "application/json")
                .body("[1,2,3]")
        }),
    ]);
}

#[test]
fn multipart_uploads_are_php_s_own_like_php_fpm() {
    let both = Both::native(&[]);
    let (content_type, body) = Multipart::new()
        .text("a", "field")
        .text("meta[tags][]", "one")
        .file("single", "hello.txt", Some("text/plain"), b"hello\n")
        .file("files[]", "a.txt", Some("text/plain"), b"first")
        .file("files[]", "b.json", Some("application/json"), b"{}")
        .file("nothing", "", Some("application/octet-stream"), b"")
        .file(
            "withpath",
            "dir/sub/deep \"quoted\".txt",
            Some("text/plain"),
            b"deep",
        )
        .file(
            "big",
            "big.bin",
            Some("application/octet-stream"),
            &binary_blob(300 * 1024),
        )
        .finish();
    let (ppm, fpm) = both.dumps(&|client, base| {
        client
            .post(format!("{base}/dump?full"))
            .header(CONTENT_TYPE, content_type.as_str())
            .body(body.clone())
    });
    assert_eq!(
        fpm.get(&["uploaded"]).map(Json::render),
        Some(Json::Array(vec![Json::Bool(true); 5]).render()),
        "php-fpm's uploads are PHP's own:\n{}",
        fpm.render()
    );
    both.assert_same("multipart with files", &ppm, &fpm);
}

#[test]
fn request_startup_warnings_and_limits_match_php_fpm() {
    let both = Both::native(&["post_max_size=2K", "max_input_vars=3", "max_file_uploads=1"]);
    both.assert_same_dumps(&[
        ("POST over post_max_size", &|client, base| {
            client
                .post(format!("{base}/dump?full"))
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(format!("a={}", "x".repeat(4096)))
        }),
        (
            "more input variables than max_input_vars",
            &form("application/x-www-form-urlencoded", "a=1&b=2&c=3&d=4&e=5"),
        ),
        (
            "multipart without a boundary",
            &form("multipart/form-data", "--x\r\n\r\n"),
        ),
        ("multipart over max_file_uploads", &|client, base| {
            post_dump(
                client,
                base,
                Multipart::new()
                    .file("one", "1.txt", Some("text/plain"), b"1")
                    .file("two", "2.txt", Some("text/plain"), b"2")
                    .finish(),
            )
        }),
    ]);
}

#[test]
fn post_data_reading_off_and_expose_php_match_php_fpm() {
    let both = Both::native(&["enable_post_data_reading=0", "expose_php=1"]);
    let (ppm, fpm) = both.dumps(&form("application/x-www-form-urlencoded", "a=body&b=2"));
    // The reference really has the setting on, so equality says something.
    let fpm_text = fpm.render();
    assert!(fpm_text.contains(r#""post":[]"#), "{fpm_text}");
    assert!(fpm_text.contains(r#""X-Powered-By: PHP/8.2"#), "{fpm_text}");
    both.assert_same(
        "POST with enable_post_data_reading=0 and expose_php=1",
        &ppm,
        &fpm,
    );
}

#[test]
fn a_chunked_body_and_the_response_php_built_match_php_fpm() {
    let both = Both::native(&[]);
    let (mut ppm, mut fpm) = both.dumps(&|client, base| {
        let body = std::io::Cursor::new(b"a=1&b[]=2&c=%C3%A9".to_vec());
        client
            .post(format!("{base}/dump?full"))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(reqwest::blocking::Body::new(body))
    });
    // The framing header PHP sees is transport (see tests/superglobals.rs).
    for dump in [&mut ppm, &mut fpm] {
        dump.remove(&["server", "HTTP_TRANSFER_ENCODING"]);
        dump.remove(&["server", "HTTP_CONTENT_LENGTH"]);
    }
    both.assert_same("chunked POST", &ppm, &fpm);

    let send = |base: String| {
        Answer::read(
            common::http()
                .get(format!("{base}/status?code=418"))
                .header(reqwest::header::HOST, HOST_HEADER)
                .send()
                .unwrap(),
        )
    };
    let (ppm, fpm) = (send(both.ppm.url("")), send(both.fpm.base()));
    assert_eq!(fpm.status, 418);
    assert_eq!(ppm, fpm, "left is ppm, right is php-fpm\n{}", both.logs());
}

#[test]
fn malformed_multipart_and_oversized_files_match_php_fpm() {
    let both = Both::native(&["upload_max_filesize=1K"]);
    let multipart = |content_type: &'static str, body: &'static str| {
        move |client: &Client, base: &str| {
            client
                .post(format!("{base}/dump?full"))
                .header(CONTENT_TYPE, content_type)
                .body(body)
        }
    };
    both.assert_same_dumps(&[
        (
            "an invalid boundary (an unterminated quote)",
            &multipart(
                "multipart/form-data; boundary=\"unterminated",
                "--unterminated\r\n\r\n",
            ),
        ),
        (
            "garbled part headers (no colon)",
            &multipart(
                "multipart/form-data; boundary=b",
                "--b\r\nContent-Disposition form-data name=a\r\n\r\nx\r\n--b--\r\n",
            ),
        ),
        ("a file over upload_max_filesize", &|client, base| {
            post_dump(
                client,
                base,
                Multipart::new()
                    .text("a", "before")
                    .file(
                        "big",
                        "big.bin",
                        Some("application/octet-stream"),
                        &[b'x'; 4096],
                    )
                    .file("small", "small.txt", Some("text/plain"), b"small")
                    .finish(),
            )
        }),
    ]);
}

#[test]
fn session_upload_progress_matches_php_fpm() {
    // Kept after the upload (cleanup off), so a second request can read
    // what PHP recorded during it.
    let sessions = tempfile::tempdir().unwrap();
    let save_path = format!("session.save_path={}", sessions.path().display());
    let both = Both::native(&[
        // Off by default in Debian's PHP build.
        "session.upload_progress.enabled=1",
        "session.upload_progress.cleanup=0",
        &save_path,
    ]);
    // Each side its own session (in one save path).
    let session = |base: &str| {
        let port = base.rsplit(':').next().unwrap_or_default();
        format!("PHPSESSID=ppmprogress{port}x{}", std::process::id())
    };
    let upload = |client: &Client, base: &str| {
        let (content_type, body) = Multipart::new()
            .text("PHP_SESSION_UPLOAD_PROGRESS", "key1")
            .text("a", "field")
            .file(
                "f",
                "data.bin",
                Some("application/octet-stream"),
                &binary_blob(200 * 1024),
            )
            .file("g", "second.txt", Some("text/plain"), b"second")
            .finish();
        client
            .post(format!("{base}/dump?full"))
            .header(CONTENT_TYPE, content_type)
            .header(COOKIE, session(base))
            .body(body)
    };
    let progress = |client: &Client, base: &str| {
        client
            .get(format!("{base}/upload-progress?key=key1"))
            .header(COOKIE, session(base))
    };
    let (mut ppm, mut fpm) = both.dumps(&upload);
    // The session ids differ on purpose.
    for dump in [&mut ppm, &mut fpm] {
        dump.remove(&["cookie", "PHPSESSID"]);
        dump.remove(&["server", "HTTP_COOKIE"]);
    }
    both.assert_same("an upload with a progress key", &ppm, &fpm);
    let (ppm, fpm) = both.dumps(&progress);
    // The reference really recorded it, so equality says something.
    assert_eq!(
        fpm.get(&["progress", "done"]).map(Json::render).as_deref(),
        Some("true"),
        "{}\n{}",
        fpm.render(),
        both.logs()
    );
    both.assert_same("the recorded upload progress", &ppm, &fpm);
}

#[test]
fn variables_order_and_register_argc_argv_match_php_fpm() {
    let get = |client: &Client, base: &str| {
        client
            .get(format!("{base}/dump?full&a=1+2&b=x+y"))
            .header(COOKIE, "c=cookie")
    };
    let post = form("application/x-www-form-urlencoded", "a=body&d=2");
    for ini in [
        &["variables_order=EGPCS", "register_argc_argv=1"][..],
        &["variables_order=GPS", "request_order=GPC"][..],
        &["variables_order=GPC"][..],
        &["variables_order=PCS", "request_order="][..],
    ] {
        let both = Both::native(ini);
        let requests: [(&str, MakeRequest); 2] = [("GET", &get), ("POST", &post)];
        let reports: Vec<String> = requests
            .iter()
            .filter_map(|(what, request)| {
                let (ppm, fpm) = both.dumps(*request);
                // The reference really applies the settings.
                if ini.contains(&"register_argc_argv=1") {
                    assert_ne!(fpm.get(&["variables", "argv"]), Some(&Json::Null));
                }
                if !ini[0].contains('S') {
                    assert_eq!(fpm.get(&["server", "REQUEST_METHOD"]), Some(&Json::Null));
                }
                both.differences(&format!("{what} with {ini:?}"), &ppm, &fpm)
            })
            .collect();
        assert!(
            reports.is_empty(),
            "{}\n{}",
            reports.join("\n\n"),
            both.logs()
        );
    }
}

#[test]
fn mbstring_input_translation_matches_php_fpm() {
    let both = Both::native(&[
        "mbstring.encoding_translation=1",
        "mbstring.http_input=SJIS",
    ]);
    // "あ" in Shift-JIS, in the query, the body and a cookie; then a
    // request with no input, which must not see the previous detection.
    both.assert_same_dumps(&[
        ("Shift-JIS input", &|client, base| {
            client
                .post(format!("{base}/dump?full&a=%82%A0"))
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(COOKIE, "c=%82%A0")
                .body("a=%82%A0&b=%82%A2")
        }),
        ("no input after it", &|client, base| {
            client.get(format!("{base}/dump?full"))
        }),
    ]);
}
