//! ppm's workers fill the superglobals exactly as PHP-FPM does.
//!
//! Every request here goes to two places: a real `ppm start` with one
//! worker running the `basic` fixture through the callable bridge, and a
//! reference stack of nginx in front of php-fpm8.2 running the very same
//! callable through `tests/fpm/front.php`. The fixture's `/dump` route
//! prints `$_GET`, `$_POST`, `$_COOKIE`, `$_FILES` (temporary names replaced
//! by the sha1 of the contents), `$_REQUEST` and a selection of `$_SERVER`
//! as JSON; the two JSON documents must be identical, key order included,
//! because PHP arrays are ordered and applications can see the order.
//!
//! The reference stack runs on loopback, on ports from `free_ports`, in a
//! temporary directory, each server in a process group of its own, and is
//! torn down (and checked gone) when the test ends, even when it fails.
//! nginx and php-fpm are required: a machine without them fails here with
//! the package to install, it does not skip.

mod common;

use common::fpm::*;
use common::*;
use reqwest::blocking::Client;
use reqwest::header::{CONTENT_TYPE, COOKIE, HOST};

// ---------------------------------------------------------------------------
// The specification
// ---------------------------------------------------------------------------

#[test]
fn query_strings_parse_into_get_like_php_fpm() {
    let both = Both::start();
    // Arrays, nested arrays, dots and spaces in names (PHP turns them into
    // `_`), percent-encoded names and values, a bracket PHP cannot close,
    // a name without a value, a repeated scalar (the last one wins).
    both.assert_same_dumps(&[("GET with arrays and encodings", &|client, base| {
        client.get(format!(
            "{base}/dump?a.b=1&c[]=2&c[]=3&d[x][y]=4&e+f=5&sp%20ace=6\
             &enc=%C3%A9t%C3%A9+%26+caf%C3%A9%3D%2B%2F&k%5Bi%5D=bracketed\
             &x[y.z]=7&open[bracket=8&d[x][]=9&empty=&novalue&r=1&r=2&%61%2Eb2=10"
        ))
    })]);
}

#[test]
fn url_encoded_post_bodies_parse_into_post_and_request_like_php_fpm() {
    let both = Both::start();
    // The query and the body share a name: `$_REQUEST` follows
    // `request_order`, and the cookie must stay out of it (Debian's
    // php.ini has `request_order = "GP"`).
    let body = "a.b=1&c[]=2&c[]=3&d[x][y]=4&e+f=5&both=body\
                &enc=%C3%A9t%C3%A9+%26+caf%C3%A9%3D%2B%2F&multi=line%0D%0Atwo";
    let form = |content_type: &'static str| {
        move |client: &Client, base: &str| {
            client
                .post(format!("{base}/dump?from=query&both=query"))
                .header(CONTENT_TYPE, content_type)
                .header(COOKIE, "both=cookie")
                .body(body)
        }
    };
    both.assert_same_dumps(&[
        (
            "POST application/x-www-form-urlencoded",
            &form("application/x-www-form-urlencoded"),
        ),
        (
            "POST application/x-www-form-urlencoded; charset=UTF-8",
            &form("application/x-www-form-urlencoded; charset=UTF-8"),
        ),
    ]);
}

#[test]
fn a_chunked_form_body_parses_like_php_fpm() {
    let both = Both::start();
    let (mut ppm, mut fpm) = both.dumps(&|client, base| {
        // A body of unknown size goes out with Transfer-Encoding: chunked.
        let body = std::io::Cursor::new(b"a=1&b[]=2&b[]=3&c=%C3%A9".to_vec());
        client
            .post(format!("{base}/dump"))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(reqwest::blocking::Body::new(body))
    });
    // The framing is hop-by-hop: nginx passes the client's
    // `Transfer-Encoding: chunked` on as HTTP_TRANSFER_ENCODING, while
    // ppm's master removes it and re-frames the body with a Content-Length
    // of its own (DESIGN.md, the request path, step 4). Which framing
    // header PHP sees is transport; CONTENT_LENGTH and the parsed body are
    // what must match.
    for dump in [&mut ppm, &mut fpm] {
        dump.remove(&["server", "HTTP_TRANSFER_ENCODING"]);
        dump.remove(&["server", "HTTP_CONTENT_LENGTH"]);
    }
    assert_eq!(
        fpm.get(&["server", "CONTENT_LENGTH"])
            .and_then(Json::as_str),
        Some("24"),
        "nginx tells PHP the de-chunked length"
    );
    both.assert_same("chunked POST application/x-www-form-urlencoded", &ppm, &fpm);
}

#[test]
fn multipart_bodies_fill_post_and_files_like_php_fpm() {
    let both = Both::start();
    let (content_type, body) = Multipart::new()
        .text("title", "Crème brûlée")
        .text("meta[tags][]", "one")
        .text("meta[tags][]", "two")
        .text("meta[author][name]", "Ada")
        .text("multi.line", "first\r\nsecond\r\n")
        .file("single", "hello.txt", Some("text/plain"), b"hello\n")
        .file("files[]", "a.txt", Some("text/plain"), b"first file")
        .file(
            "files[]",
            "b.json",
            Some("application/json"),
            b"{\"second\":true}",
        )
        .file("doc[a][b]", "nested.csv", Some("text/csv"), b"x,y\n1,2\n")
        // What a browser sends for a file input left empty: UPLOAD_ERR_NO_FILE.
        .file("nothing", "", Some("application/octet-stream"), b"")
        // A real file that happens to be empty is a successful upload.
        .file("zero", "zero.bin", Some("application/octet-stream"), b"")
        // PHP 8.1+ keeps the path in `full_path` and the basename in `name`.
        .file("withpath", "dir/sub/deep.txt", Some("text/plain"), b"deep")
        // PHP reports a part's Content-Type without its parameters.
        .file("charset", "c.txt", Some("text/plain; charset=UTF-8"), b"c")
        // No Content-Type in the part: PHP reports an empty type.
        .file("untyped", "untyped.dat", None, b"untyped")
        // Larger than any in-memory buffer, with bytes that look like the
        // start of a boundary, to exercise spooling and the part parser.
        .file(
            "big",
            "big.bin",
            Some("application/octet-stream"),
            &binary_blob(300 * 1024),
        )
        .finish();
    let (ppm, fpm) = both.dumps(&|client, base| {
        client
            .post(format!("{base}/dump"))
            .header(CONTENT_TYPE, content_type.as_str())
            .body(body.clone())
    });
    // The reference really saw the uploads, so equality is not vacuous.
    assert_eq!(
        fpm.get(&["files", "big", "size"]),
        Some(&Json::Number("307200".into())),
        "php-fpm received the big file:\n{}",
        fpm.render()
    );
    both.assert_same("multipart/form-data with fields and files", &ppm, &fpm);
}

#[test]
fn json_and_put_bodies_leave_post_empty_like_php_fpm() {
    let both = Both::start();
    both.assert_same_dumps(&[
        ("POST application/json", &|client, base| {
            client
                .post(format!("{base}/dump"))
                .header(CONTENT_TYPE, "application/json")
                .body(r#"{"a":1,"b":[1,2],"c":{"d":"e"}}"#)
        }),
        // PHP only parses form bodies of POST requests.
        ("PUT application/x-www-form-urlencoded", &|client, base| {
            client
                .put(format!("{base}/dump?q=1"))
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body("a=1&b[]=2")
        }),
    ]);
}

#[test]
fn cookies_parse_into_cookie_like_php_fpm() {
    let both = Both::start();
    // Values are decoded like rawurldecode() (`+` stays), names are not
    // decoded at all, `=` after the first belongs to the value, the first of
    // two equal names wins, brackets make arrays, dots and spaces in names
    // become `_`.
    both.assert_same_dumps(&[("Cookie header", &|client, base| {
        client.get(format!("{base}/dump")).header(
            COOKIE,
            "plain=value; eq=a=b=c; slash=%2Fpath%2F; plus=a+b; dup=first; dup=second; \
             arr[k]=v; arr[j]=w; dot.ted=1; sp ace=2; enc=%C3%A9%20%3B; n%5Bx%5D=raw",
        )
    })]);
}

#[test]
fn request_headers_become_http_server_keys_like_php_fpm() {
    let both = Both::start();
    let request = |client: &Client, base: &str| {
        client
            .get(format!("{base}/dump"))
            .header("X-Custom-One", "1")
            .header("X-Custom-Two", "two words, and a comma")
            .header("x-lower-case", "lower")
            .header("X-Empty", "")
            .header("User-Agent", "superglobals-test/1.0")
            .header("Accept-Language", "fr-CH, fr;q=0.9, en;q=0.8")
            .header("X-Repeated", "first")
            .header("X-Repeated", "second")
    };
    let (mut ppm, mut fpm) = both.dumps(&request);
    // A header sent twice is one field with both values joined by ", "
    // (RFC 9110, 5.3); that is what PHP-FPM sees behind nginx 1.23+ or
    // Apache. nginx 1.22 (Debian 12) passes each line as its own FastCGI
    // parameter and php-fpm keeps the last one, so the reference is allowed
    // that older answer while ppm must give the joined value.
    let ppm_repeated = ppm.remove(&["server", "HTTP_X_REPEATED"]);
    let fpm_repeated = fpm.remove(&["server", "HTTP_X_REPEATED"]);
    assert!(
        matches!(
            fpm_repeated.as_ref().and_then(Json::as_str),
            Some("first, second" | "second")
        ),
        "the reference stack saw the repeated header as {fpm_repeated:?}"
    );
    assert_eq!(
        ppm_repeated.as_ref().and_then(Json::as_str),
        Some("first, second"),
        "$_SERVER['HTTP_X_REPEATED'] for `X-Repeated: first` + `X-Repeated: second`\n{}",
        both.logs()
    );
    both.assert_same("custom and repeated request headers", &ppm, &fpm);
}

#[test]
fn a_location_header_after_a_post_redirects_like_php_fpm() {
    let both = Both::start();
    // PHP answers 303 to a POST only when the SAPI says the protocol is
    // above HTTP/1.0; php-fpm never says, so it is 302 there, and the GET
    // is 302 anyway.
    let send = |base: &str, post: bool| {
        let url = format!("{base}/redirect-exit");
        let request = if post {
            http().post(url).body("a=1")
        } else {
            http().get(url)
        };
        Answer::read(request.header(HOST, HOST_HEADER).send().unwrap())
    };
    for post in [true, false] {
        let (ppm, fpm) = (send(&both.ppm_base(), post), send(&both.fpm.base(), post));
        assert_eq!(fpm.status, 302, "the reference stack:\n{}", both.logs());
        assert_eq!(fpm.location.as_deref(), Some("/x"));
        assert_eq!(
            ppm,
            fpm,
            "post: {post}: left is ppm, right is php-fpm\n{}",
            both.logs()
        );
    }
}

#[test]
fn status_headers_and_cookies_set_by_php_reach_the_client_like_php_fpm() {
    let both = Both::start();
    let send = |base: &str| {
        let response = http()
            .get(format!("{base}/status?code=418"))
            .header(HOST, HOST_HEADER)
            .send()
            .unwrap_or_else(|e| panic!("GET {base}/status?code=418: {e}"));
        Answer::read(response)
    };
    let ppm = send(&both.ppm_base());
    let fpm = send(&both.fpm.base());
    assert_eq!(
        fpm.status,
        418,
        "the reference stack runs the fixture:\n{}",
        both.logs()
    );
    assert_eq!(
        fpm.set_cookie,
        ["flavour=oat%3Dmeal%2Fraisin; HttpOnly; SameSite=Strict"],
        "the reference stack sends the fixture's cookie"
    );
    assert_eq!(
        ppm,
        fpm,
        "GET /status?code=418: left is ppm, right is php-fpm\n{}",
        both.logs()
    );
}
