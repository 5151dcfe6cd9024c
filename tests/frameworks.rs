//! The httpKernel bridge runs real Symfony 5.4 and Laravel 8 applications
//! correctly, request after request.
//!
//! The applications are `tests/fixtures/symfony` and `tests/fixtures/laravel`,
//! built from Debian's packages. Every test starts its own `ppm start` with
//! two workers and talks to the balancer (a slot port only where one
//! worker's own history is the point). The specifications that hold for
//! both frameworks run against each: `symfony::...` and `laravel::...`.
//!
//! The same specifications run again through nginx over FastCGI
//! (`*_over_fastcgi::...`): nginx with the shipped
//! docker/nginx-fastcgi.conf (stock `fastcgi_params`, `fastcgi_pass` to
//! ppm's `--fastcgi-listen`), with kept connections on and off. `over`
//! sets that for the test's thread; `Framework::start` then starts the
//! nginx too, and the cluster's `url` and `port` are nginx's.

mod common;
mod deploy;

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use reqwest::blocking::multipart::{Form, Part};
use reqwest::blocking::{Client, Response};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, COOKIE, LOCATION, REFERER, SET_COOKIE};
use serde_json::Value;

const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------
// The specification, for both frameworks
// ---------------------------------------------------------------------------

mod symfony {
    use super::*;

    const APP: Framework = Framework::Symfony;

    #[test]
    fn two_logged_in_clients_only_ever_see_their_own_user_and_counter_across_workers() {
        super::two_logged_in_clients_only_ever_see_their_own_user_and_counter(APP);
    }

    #[test]
    fn cookie_values_with_equals_signs_and_encoded_slashes_survive_and_samesite_strict_reaches_the_client(
    ) {
        super::cookie_values_survive_the_round_trip_and_samesite_strict_reaches_the_client(APP);
    }

    #[test]
    fn a_5_mib_upload_arrives_whole_and_uploaded_file_move_works() {
        super::a_5_mib_upload_arrives_whole_and_move_works(APP);
    }

    #[test]
    fn a_multi_file_upload_with_nested_field_names_arrives_whole() {
        super::a_multi_file_upload_with_nested_names_arrives_whole(APP);
    }

    #[test]
    fn a_streamed_response_reaches_the_client_chunk_by_chunk() {
        super::a_streamed_response_reaches_the_client_chunk_by_chunk(APP);
    }

    #[test]
    fn a_50_mib_binary_file_response_streams_without_raising_php_memory() {
        super::a_50_mib_download_streams_without_raising_php_memory(APP);
    }

    #[test]
    fn x_forwarded_proto_https_from_a_trusted_proxy_makes_the_app_see_https_and_make_https_urls() {
        super::https_from_a_trusted_proxy_is_seen(APP);
    }

    #[test]
    fn x_forwarded_proto_https_from_an_untrusted_client_is_ignored() {
        super::https_from_an_untrusted_client_is_ignored(APP);
    }

    #[test]
    fn a_terminate_listener_sleeping_1_s_does_not_delay_the_response() {
        super::a_slow_terminate_step_does_not_delay_the_response(APP);
    }

    #[test]
    fn status_redirects_304_head_and_stray_output_reach_the_client_as_under_php_fpm() {
        super::responses_map_without_loss(APP);
    }

    #[test]
    fn method_query_headers_and_form_bodies_reach_the_app_unchanged() {
        super::requests_map_without_loss(APP);
    }

    #[test]
    fn trusted_proxies_and_trusted_hosts_from_the_environment_are_honoured() {
        let cluster = APP.start(&[]);
        let client = http();
        let seen = json(client.get(cluster.url("/url")).send().unwrap());
        // From the fixture's .env, read through symfony/dotenv.
        assert_eq!(
            seen["trusted_proxies"],
            serde_json::json!(["127.0.0.1/32", "::1"]),
            "{seen}"
        );
        let refused = client
            .get(cluster.url("/hello"))
            .header("Host", "elsewhere.example")
            .send()
            .unwrap();
        assert_eq!(
            refused.status(),
            400,
            "a Host outside TRUSTED_HOSTS is refused"
        );
        let local = client
            .get(cluster.url("/hello"))
            .header("Host", "localhost")
            .send()
            .unwrap();
        assert_eq!(local.status(), 200);
    }

    #[test]
    fn a_worker_that_cannot_find_the_kernel_or_the_autoloader_fails_to_start_saying_why() {
        let (code, log) = worker_boot("APP_KERNEL_CLASS", "App\\NoSuchKernel");
        assert_eq!(code, 1, "{log}");
        assert!(
            log.contains("Symfony kernel class App\\NoSuchKernel not found"),
            "{log}"
        );
        let (code, log) = worker_boot("COMPOSER_VENDOR_DIR", "/nonexistent/vendor");
        assert_eq!(code, 1, "{log}");
        assert!(
            log.contains(
                "COMPOSER_VENDOR_DIR is set but /nonexistent/vendor/autoload.php does not exist"
            ),
            "{log}"
        );
    }

    /// `ppm worker` on the fixture with one environment variable set:
    /// its exit code and its log.
    fn worker_boot(name: &str, value: &str) -> (i32, String) {
        let port = free_ports(1);
        let mut child = std::process::Command::new(PPM)
            .arg("worker")
            .arg(fixture("symfony"))
            .args(["--bridge", "httpKernel", "--bootstrap", "symfony"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env(name, value)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let Some(status) = wait_until(Duration::from_secs(30), || child.try_wait().ok().flatten())
        else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ppm worker with {name}={value} did not exit");
        };
        let mut log = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        (status.code().unwrap_or(-1), log)
    }

    #[test]
    fn doctrine_entity_managers_are_cleared_between_requests() {
        let cluster = APP.start(&[]);
        let client = http();
        let mut pids = HashSet::new();
        for _ in 0..10 {
            let seen = json(client.get(cluster.url("/doctrine")).send().unwrap());
            assert_eq!(
                seen["managed"], 1,
                "each request starts with an empty identity map: {seen}"
            );
            pids.insert(seen["pid"].to_string());
        }
        assert_eq!(pids.len(), 2, "both workers answered");
    }

    #[test]
    fn a_custom_bootstrap_class_builds_the_kernel_once_and_its_hooks_run_around_each_request() {
        let cluster = Cluster::start(Setup {
            app: fixture("symfony"),
            bridge: "httpKernel",
            bootstrap: "App\\Ppm\\Bootstrap",
            workers: 2,
            extra: vec!["--app-env".into(), "prod".into()],
            wait_ready: true,
        });
        let client = http();
        let mut pid = None;
        for n in 1..=3 {
            let seen = json(client.get(cluster.slot_url(0, "/hooks")).send().unwrap());
            assert_eq!(seen["booted_with"], "prod/no-debug", "{seen}");
            assert_eq!(
                seen["before"], n,
                "beforeRequest ran once per request: {seen}"
            );
            assert_eq!(seen["before_this_request"], n, "{seen}");
            assert_eq!(
                seen["after"],
                n - 1,
                "afterRequest ran after each earlier request: {seen}"
            );
            let this = seen["pid"].to_string();
            assert_eq!(
                pid.get_or_insert(this.clone()),
                &this,
                "one worker, one kernel"
            );
        }
    }
}

mod laravel {
    use super::*;

    const APP: Framework = Framework::Laravel;

    #[test]
    fn two_logged_in_clients_only_ever_see_their_own_user_and_counter_across_workers() {
        super::two_logged_in_clients_only_ever_see_their_own_user_and_counter(APP);
    }

    #[test]
    fn cookie_values_with_equals_signs_and_encoded_slashes_survive_and_samesite_strict_reaches_the_client(
    ) {
        super::cookie_values_survive_the_round_trip_and_samesite_strict_reaches_the_client(APP);
    }

    #[test]
    fn a_5_mib_upload_arrives_whole_and_uploaded_file_move_works() {
        super::a_5_mib_upload_arrives_whole_and_move_works(APP);
    }

    #[test]
    fn a_multi_file_upload_with_nested_field_names_arrives_whole() {
        super::a_multi_file_upload_with_nested_names_arrives_whole(APP);
    }

    #[test]
    fn a_streamed_response_reaches_the_client_chunk_by_chunk() {
        super::a_streamed_response_reaches_the_client_chunk_by_chunk(APP);
    }

    #[test]
    fn a_50_mib_binary_file_response_streams_without_raising_php_memory() {
        super::a_50_mib_download_streams_without_raising_php_memory(APP);
    }

    #[test]
    fn x_forwarded_proto_https_from_a_trusted_proxy_makes_the_app_see_https_and_make_https_urls() {
        super::https_from_a_trusted_proxy_is_seen(APP);
    }

    #[test]
    fn x_forwarded_proto_https_from_an_untrusted_client_is_ignored() {
        super::https_from_an_untrusted_client_is_ignored(APP);
    }

    #[test]
    fn a_terminable_middleware_sleeping_1_s_does_not_delay_the_response() {
        super::a_slow_terminate_step_does_not_delay_the_response(APP);
    }

    #[test]
    fn status_redirects_304_head_and_stray_output_reach_the_client_as_under_php_fpm() {
        super::responses_map_without_loss(APP);
    }

    #[test]
    fn method_query_headers_and_form_bodies_reach_the_app_unchanged() {
        super::requests_map_without_loss(APP);
    }

    #[test]
    fn a_validation_error_redirects_back_with_the_errors_in_the_session() {
        let cluster = APP.start(&[]);
        let browser = browser();
        let form = cluster.url("/form");
        let response = browser
            .post(&form)
            .header(REFERER, &form)
            .form(&[("email", "not an address")])
            .send()
            .unwrap();
        assert_eq!(response.status(), 302, "invalid input redirects");
        assert_eq!(
            response.headers()[LOCATION].to_str().unwrap(),
            form,
            "back to where the form was"
        );
        // The next request, on whichever worker, finds the errors and the
        // old input flashed into the session; the one after no longer does.
        let page = json(browser.get(&form).send().unwrap());
        assert_eq!(
            page["errors"]["email"][0], "The email must be a valid email address.",
            "{page}"
        );
        assert_eq!(
            page["errors"]["name"][0], "The name field is required.",
            "{page}"
        );
        assert_eq!(page["old"]["email"], "not an address", "{page}");
        let again = json(browser.get(&form).send().unwrap());
        assert_eq!(
            again["errors"],
            serde_json::json!([]),
            "flashed once: {again}"
        );

        let valid = json(
            browser
                .post(&form)
                .header(REFERER, &form)
                .form(&[("email", "ada@example.org"), ("name", "Ada")])
                .send()
                .unwrap(),
        );
        assert_eq!(valid["valid"]["email"], "ada@example.org", "{valid}");
    }

    #[test]
    fn a_json_post_body_is_readable_through_request_input() {
        let cluster = APP.start(&[]);
        let body = serde_json::json!({"name": "Ada", "nested": {"value": 42}, "list": [1, 2, 3]});
        let response = http()
            .post(cluster.url("/api/json"))
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .unwrap();
        let seen = json(response);
        assert_eq!(seen["name"], "Ada", "{seen}");
        assert_eq!(seen["nested"], 42, "{seen}");
        assert_eq!(seen["list"], serde_json::json!([1, 2, 3]), "{seen}");
        assert_eq!(seen["all"], body, "{seen}");
        assert_eq!(seen["is_json"], true, "{seen}");
    }

    #[test]
    fn terminating_callbacks_registered_during_a_request_run_once_and_do_not_pile_up() {
        let cluster = APP.start(&[]);
        let client = http();
        let first = json(
            client
                .get(cluster.slot_url(0, "/terminating"))
                .send()
                .unwrap(),
        );
        let boot_runs = first["boot_callback_runs"].as_u64().unwrap();
        assert_eq!(first["request_callback_runs"], 0, "{first}");
        for n in 1..=5u64 {
            let seen = json(
                client
                    .get(cluster.slot_url(0, "/terminating"))
                    .send()
                    .unwrap(),
            );
            assert_eq!(
                seen["request_callback_runs"], n,
                "each request's own callback ran once, after its request: {seen}"
            );
            assert_eq!(
                seen["boot_callback_runs"],
                boot_runs + n,
                "the callback registered while booting runs after every request: {seen}"
            );
        }
    }
}

/// The specifications through nginx and FastCGI. `forwarded` replaces the
/// two checks of ppm's own trust in X-Forwarded-*: over FastCGI, as under
/// php-fpm, the web server's parameters are the request and the
/// application decides whom it trusts.
macro_rules! over_fastcgi {
    ($name:ident, $app:expr, $keep:expr) => {
        mod $name {
            use super::*;

            const APP: Framework = $app;

            #[test]
            fn two_logged_in_clients_only_ever_see_their_own_user_and_counter() {
                over($keep, || {
                    super::two_logged_in_clients_only_ever_see_their_own_user_and_counter(APP)
                });
            }

            #[test]
            fn cookie_values_survive_and_samesite_strict_reaches_the_client() {
                over($keep, || {
                    super::cookie_values_survive_the_round_trip_and_samesite_strict_reaches_the_client(APP)
                });
            }

            #[test]
            fn a_5_mib_upload_arrives_whole_and_move_works() {
                over($keep, || super::a_5_mib_upload_arrives_whole_and_move_works(APP));
            }

            #[test]
            fn a_multi_file_upload_with_nested_names_arrives_whole() {
                over($keep, || super::a_multi_file_upload_with_nested_names_arrives_whole(APP));
            }

            #[test]
            fn a_streamed_response_reaches_the_client_chunk_by_chunk() {
                over($keep, || super::a_streamed_response_reaches_the_client_chunk_by_chunk(APP));
            }

            #[test]
            fn a_50_mib_download_streams_without_raising_php_memory() {
                over($keep, || super::a_50_mib_download_streams_without_raising_php_memory(APP));
            }

            #[test]
            fn x_forwarded_proto_from_nginx_reaches_the_app_as_under_php_fpm() {
                over($keep, || super::forwarded_headers_from_nginx_reach_the_app(APP));
            }

            #[test]
            fn a_slow_terminate_step_does_not_delay_the_response() {
                over($keep, || super::a_slow_terminate_step_does_not_delay_the_response(APP));
            }

            #[test]
            fn status_redirects_304_head_and_stray_output_reach_the_client() {
                over($keep, || super::responses_map_without_loss(APP));
            }

            #[test]
            fn method_query_headers_and_form_bodies_reach_the_app_unchanged() {
                over($keep, || super::requests_map_without_loss(APP));
            }
        }
    };
}

over_fastcgi!(symfony_over_fastcgi, Framework::Symfony, true);
over_fastcgi!(laravel_over_fastcgi, Framework::Laravel, true);
over_fastcgi!(
    symfony_over_fastcgi_without_kept_connections,
    Framework::Symfony,
    false
);
over_fastcgi!(
    laravel_over_fastcgi_without_kept_connections,
    Framework::Laravel,
    false
);

// ---------------------------------------------------------------------------
// The specifications
// ---------------------------------------------------------------------------

fn two_logged_in_clients_only_ever_see_their_own_user_and_counter(app: Framework) {
    let cluster = app.start(&[]);
    let users = ["alice", "bob"];
    let clients: Vec<Client> = users
        .iter()
        .map(|user| {
            let client = browser();
            let response = client
                .post(cluster.url("/login"))
                .form(&[("user", *user)])
                .send()
                .unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(json(response)["user"], *user);
            client
        })
        .collect();

    // Both users and a client without cookies, all at once, 200 requests each.
    let counter = cluster.url("/session/counter");
    let whoami = cluster.url("/whoami");
    let mut threads = Vec::new();
    for (client, user) in clients.into_iter().zip(users) {
        let url = counter.clone();
        threads.push(std::thread::spawn(move || {
            let mut pids = HashSet::new();
            for n in 1..=200u64 {
                let seen = json(client.get(&url).send().unwrap());
                if seen["user"] != user || seen["counter"] != n {
                    return Err(format!(
                        "{user}'s request {n} saw {seen} (expected user {user}, counter {n})"
                    ));
                }
                pids.insert(seen["pid"].to_string());
            }
            Ok(pids)
        }));
    }
    threads.push(std::thread::spawn(move || {
        let client = http();
        let mut pids = HashSet::new();
        for n in 1..=200 {
            let url = if n % 2 == 0 { &whoami } else { &counter };
            let seen = json(client.get(url).send().unwrap());
            let counter_ok = seen.get("counter").is_none() || seen["counter"] == 1;
            if !seen["user"].is_null() || !counter_ok {
                return Err(format!("the cookie-less request {n} saw {seen}"));
            }
            pids.insert(seen["pid"].to_string());
        }
        Ok(pids)
    }));

    let mut pids = HashSet::new();
    for thread in threads {
        match thread.join().unwrap() {
            Ok(seen) => pids.extend(seen),
            Err(leak) => panic!("{leak}\nlog:\n{}", cluster.log_text()),
        }
    }
    assert_eq!(pids.len(), 2, "the requests spread over both workers");
}

fn cookie_values_survive_the_round_trip_and_samesite_strict_reaches_the_client(app: Framework) {
    let cluster = app.start(&[]);

    // Sent by the client: the app reads them as PHP does (values decoded
    // like rawurldecode(): '=' kept, %2F decoded, '+' kept).
    let seen = json(
        http()
            .get(cluster.url("/cookies"))
            .header(COOKIE, "eq=a=b=c; enc=x%2Fy; plus=1+2")
            .send()
            .unwrap(),
    );
    assert_eq!(seen["eq"], "a=b=c", "{seen}");
    assert_eq!(seen["enc"], "x/y", "{seen}");
    assert_eq!(seen["plus"], "1+2", "{seen}");

    // Set by the app: several Set-Cookie headers with their attributes, and
    // a value with '=', '/' and a literal "%2F" that comes back unchanged.
    let browser = browser();
    let response = browser.get(cluster.url("/cookies/set")).send().unwrap();
    assert_eq!(response.status(), 200);
    let set_cookies: Vec<String> = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let named = |name: &str| {
        set_cookies
            .iter()
            .find(|c| c.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no Set-Cookie for {name}: {set_cookies:?}"))
            .to_ascii_lowercase()
    };
    assert!(
        named("strict").contains("samesite=strict"),
        "{set_cookies:?}"
    );
    assert!(
        named("roundtrip").contains("samesite=lax"),
        "{set_cookies:?}"
    );
    // Laravel derives Max-Age from the expiry time, so a second boundary
    // crossed in between makes it 3599.
    let plain = named("plain");
    assert!(
        (plain.contains("max-age=3600") || plain.contains("max-age=3599"))
            && !plain.contains("httponly"),
        "{set_cookies:?}"
    );
    let back = json(browser.get(cluster.url("/cookies")).send().unwrap());
    assert_eq!(back["roundtrip"], "a=b/c%2Fd==", "{back}");
    assert_eq!(back["strict"], "yes", "{back}");
    assert_eq!(back["plain"], "v1", "{back}");
}

fn a_5_mib_upload_arrives_whole_and_move_works(app: Framework) {
    let cluster = app.start(&[]);
    let data = blob(5 * MIB, 7);
    let form = Form::new().text("note", "five mebibytes").part(
        "file",
        Part::bytes(data.clone())
            .file_name("five.bin")
            .mime_str("application/octet-stream")
            .unwrap(),
    );
    let seen = json(
        http()
            .post(cluster.url("/upload"))
            .multipart(form)
            .send()
            .unwrap(),
    );
    let sha1 = sha1_hex(&data);
    assert_eq!(seen["name"], "five.bin", "{seen}");
    assert_eq!(seen["size"], data.len(), "{seen}");
    assert_eq!(seen["sha1"], sha1, "the upload arrived whole: {seen}");
    assert_eq!(seen["field"], "five mebibytes", "{seen}");
    assert_eq!(
        seen["moved_sha1"], sha1,
        "UploadedFile::move() moved it: {seen}"
    );
    assert_eq!(seen["moved_size"], data.len(), "{seen}");
}

fn a_multi_file_upload_with_nested_names_arrives_whole(app: Framework) {
    let cluster = app.start(&[]);
    let files = [
        ("docs[a][]", "first.bin", blob(300 * 1024, 1)),
        ("docs[a][]", "second.txt", b"second file\n".to_vec()),
        ("docs[b][c]", "third.bin", blob(2 * MIB + 3, 3)),
    ];
    let mut form = Form::new().text("title", "three files");
    for (field, name, data) in &files {
        form = form.part(
            field.to_string(),
            Part::bytes(data.clone()).file_name(name.to_string()),
        );
    }
    let seen = json(
        http()
            .post(cluster.url("/upload/many"))
            .multipart(form)
            .send()
            .unwrap(),
    );
    let expected: BTreeMap<&str, (&str, usize, String)> = [
        ("docs[a][0]", &files[0]),
        ("docs[a][1]", &files[1]),
        ("docs[b][c]", &files[2]),
    ]
    .into_iter()
    .map(|(key, (_, name, data))| (key, (*name, data.len(), sha1_hex(data))))
    .collect();
    let got = seen["files"].as_object().expect("files");
    assert_eq!(got.len(), 3, "{seen}");
    for (key, (name, size, sha1)) in expected {
        let file = &got[key];
        assert_eq!(file["name"], name, "{key}: {seen}");
        assert_eq!(file["size"], size, "{key}: {seen}");
        assert_eq!(file["sha1"], sha1, "{key} arrived whole: {seen}");
    }
    assert_eq!(seen["fields"]["title"], "three files", "{seen}");
}

fn a_streamed_response_reaches_the_client_chunk_by_chunk(app: Framework) {
    let cluster = app.start(&[]);
    let mut stream = TcpStream::connect(("127.0.0.1", cluster.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            b"GET /stream?chunks=20&delay_ms=100 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        .unwrap();

    // Every line the app writes is "chunk N at UNIX_TIME"; note when each
    // arrives. Clients and workers share the clock of this machine.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut raw = Vec::new();
    let mut scanned = 0;
    let mut chunks: Vec<(u32, f64, f64)> = Vec::new(); // (n, produced, arrived)
    let mut buf = [0u8; 8192];
    while chunks.len() < 20 && Instant::now() < deadline {
        let read = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => panic!("reading the stream: {e}"),
        };
        let arrived = now();
        raw.extend_from_slice(&buf[..read]);
        while let Some(end) = raw[scanned..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&raw[scanned..scanned + end]).to_string();
            scanned += end + 1;
            if let Some(rest) = line.trim_end().strip_prefix("chunk ") {
                let (n, produced) = rest.split_once(" at ").expect("chunk line");
                chunks.push((n.parse().unwrap(), produced.parse().unwrap(), arrived));
            }
        }
    }
    let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.1 200"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let order: Vec<u32> = chunks.iter().map(|c| c.0).collect();
    assert_eq!(
        order,
        (0..20).collect::<Vec<_>>(),
        "all 20 chunks, in order"
    );

    let (_, _, first_arrived) = chunks[0];
    let (_, last_produced, last_arrived) = chunks[19];
    assert!(
        last_produced - first_arrived > 1.2,
        "the first chunk arrived {:.2} s before the last was produced (expected ~1.9 s)",
        last_produced - first_arrived
    );
    let worst_lag = chunks
        .iter()
        .map(|(_, produced, arrived)| arrived - produced)
        .fold(0.0, f64::max);
    assert!(
        worst_lag < 0.9,
        "each chunk arrived as it was produced; the worst lag was {worst_lag:.3} s"
    );
    assert!(
        last_arrived - first_arrived > 1.2,
        "the chunks did not arrive at once"
    );
}

fn a_50_mib_download_streams_without_raising_php_memory(app: Framework) {
    let cluster = app.start(&[]);
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let path = dir.path().join("fifty.bin");
    let size = 50 * MIB;
    {
        let mut file = std::fs::File::create(&path).unwrap();
        let block = blob(MIB, 50);
        for _ in 0..50 {
            file.write_all(&block).unwrap();
        }
    }
    let id = unique_id("download");
    let mut response = http()
        .get(cluster.url("/download"))
        .query(&[("path", path.to_str().unwrap()), ("id", id.as_str())])
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()[CONTENT_LENGTH].to_str().unwrap(),
        size.to_string(),
        "the size is kept while the body streams"
    );
    let block = blob(MIB, 50);
    let mut received = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = response.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        let mut done = 0;
        while done < n {
            let at = (received + done) % MIB;
            let len = (n - done).min(MIB - at);
            assert!(
                buf[done..done + len] == block[at..at + len],
                "the bytes from offset {} differ from the file's",
                received + done
            );
            done += len;
        }
        received += n;
    }
    assert_eq!(received, size, "the whole file arrived");

    let report = wait_for_report(&cluster, &id);
    let growth = report["peak"].as_u64().unwrap() - report["baseline"].as_u64().unwrap();
    eprintln!(
        "{}: peak PHP memory during a 50 MiB download rose {:.2} MiB over the request's baseline",
        app.name(),
        growth as f64 / MIB as f64
    );
    assert!(
        growth < 4 * MIB as u64,
        "the download raised the worker's peak PHP memory by {growth} bytes: {report}"
    );
}

fn https_from_a_trusted_proxy_is_seen(app: Framework) {
    let cluster = app.start(&["--trusted-proxies=127.0.0.1/32"]);
    let seen = json(
        http()
            .get(cluster.url("/url"))
            .header("X-Forwarded-Proto", "https")
            .send()
            .unwrap(),
    );
    assert_eq!(seen["server_https"], "on", "$_SERVER['HTTPS']: {seen}");
    assert_eq!(seen["secure"], true, "{seen}");
    assert_eq!(seen["scheme"], "https", "{seen}");
    assert!(
        seen["url"].as_str().unwrap().starts_with("https://"),
        "{seen}"
    );
}

/// What nginx passes (`HTTP_X_FORWARDED_PROTO` from the client, no `HTTPS`
/// on plain http) reaches the application as php-fpm would give it, and
/// the application's own trusted proxies (127.0.0.1 in both fixtures)
/// decide: it sees https and makes https URLs.
fn forwarded_headers_from_nginx_reach_the_app(app: Framework) {
    let cluster = app.start(&[]);
    let seen = json(
        http()
            .get(cluster.url("/url"))
            .header("X-Forwarded-Proto", "https")
            .send()
            .unwrap(),
    );
    assert!(seen["server_https"].is_null(), "no HTTPS parameter: {seen}");
    assert_eq!(seen["secure"], true, "{seen}");
    assert_eq!(seen["scheme"], "https", "{seen}");
    assert!(
        seen["url"].as_str().unwrap().starts_with("https://"),
        "{seen}"
    );
    let plain = json(http().get(cluster.url("/url")).send().unwrap());
    assert_eq!(plain["secure"], false, "{plain}");
    assert_eq!(
        plain["client_ip"], "127.0.0.1",
        "REMOTE_ADDR from nginx: {plain}"
    );
}

fn https_from_an_untrusted_client_is_ignored(app: Framework) {
    let cluster = app.start(&[]);
    let seen = json(
        http()
            .get(cluster.url("/url"))
            .header("X-Forwarded-Proto", "https")
            .send()
            .unwrap(),
    );
    assert_eq!(seen["secure"], false, "{seen}");
    assert_eq!(seen["scheme"], "http", "{seen}");
    assert!(
        seen["url"].as_str().unwrap().starts_with("http://"),
        "{seen}"
    );
    assert!(seen["server_https"].is_null(), "{seen}");
}

fn a_slow_terminate_step_does_not_delay_the_response(app: Framework) {
    let cluster = app.start(&[]);
    let id = unique_id("terminate");
    let started = Instant::now();
    let response = http()
        .get(cluster.url("/slow-terminate"))
        .query(&[("id", id.as_str())])
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().unwrap();
    let received = now();
    let elapsed = started.elapsed();
    let report = wait_for_report(&cluster, &id);
    let finished = report["finished"].as_f64().unwrap();
    let slept = finished - report["started"].as_f64().unwrap();
    assert!(slept >= 0.95, "the terminate step ran its 1 s: {report}");
    // Had the response waited for the terminate step, it would have
    // arrived after the step ended.
    assert!(
        finished - received > 0.6,
        "the client had the whole response ({body:?}, after {elapsed:?}) only {:.2} s \
         before the terminate step ended",
        finished - received
    );
}

fn responses_map_without_loss(app: Framework) {
    let cluster = app.start(&[]);
    let client = http();

    let hello = client.get(cluster.url("/hello")).send().unwrap();
    assert_eq!(hello.status(), 200);
    assert_eq!(hello.headers()[CONTENT_TYPE], "text/plain; charset=UTF-8");
    let greeting = hello.text().unwrap();
    assert!(greeting.starts_with("Hello from "), "{greeting}");

    let redirect = client.get(cluster.url("/redirect")).send().unwrap();
    assert_eq!(redirect.status(), 302);
    let location = redirect.headers()[LOCATION].to_str().unwrap();
    assert!(location.ends_with("/hello"), "{location}");

    let fresh = client.get(cluster.url("/conditional")).send().unwrap();
    assert_eq!(fresh.status(), 200);
    let etag = fresh.headers()["etag"].to_str().unwrap().to_string();
    let not_modified = client
        .get(cluster.url("/conditional"))
        .header("If-None-Match", &etag)
        .send()
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    assert_eq!(not_modified.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(not_modified.text().unwrap(), "");

    let head = client.head(cluster.url("/hello")).send().unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()[CONTENT_TYPE], "text/plain; charset=UTF-8");
    assert_eq!(head.text().unwrap(), "");

    let echo = client.get(cluster.url("/echo")).send().unwrap();
    assert_eq!(
        echo.text().unwrap(),
        "stray output, then the response body",
        "output echoed by the controller comes before the response body"
    );
}

fn requests_map_without_loss(app: Framework) {
    let cluster = app.start(&[]);
    let client = http();
    let seen = json(
        client
            .post(cluster.url("/dump?list[]=1&list[]=2&q=x%20y%2Bz"))
            .header("X-Custom-Header", "custom value")
            .form(&[("field", "a value"), ("map[key]", "v")])
            .send()
            .unwrap(),
    );
    let body = app.body_key();
    assert_eq!(seen["method"], "POST", "{seen}");
    assert_eq!(
        seen["query"]["list"],
        serde_json::json!(["1", "2"]),
        "{seen}"
    );
    assert_eq!(seen["query"]["q"], "x y+z", "{seen}");
    assert_eq!(seen[body]["field"], "a value", "{seen}");
    assert_eq!(seen[body]["map"]["key"], "v", "{seen}");
    assert_eq!(seen["headers"]["x-custom-header"], "custom value", "{seen}");
    assert_eq!(seen["client_ip"], "127.0.0.1", "{seen}");
    assert_eq!(seen["scheme"], "http", "{seen}");

    // A form-encoded PUT body is parsed too (Request::createFromGlobals()).
    let put = json(
        client
            .put(cluster.url("/dump"))
            .form(&[("name", "put value")])
            .send()
            .unwrap(),
    );
    assert_eq!(put["method"], "PUT", "{put}");
    assert_eq!(put[body]["name"], "put value", "{put}");
    assert_eq!(put["content"], "name=put+value", "{put}");
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Framework {
    Symfony,
    Laravel,
}

impl Framework {
    fn name(self) -> &'static str {
        match self {
            Framework::Symfony => "symfony",
            Framework::Laravel => "laravel",
        }
    }

    /// Where the app's dump puts the parsed body.
    fn body_key(self) -> &'static str {
        match self {
            Framework::Symfony => "request",
            Framework::Laravel => "input",
        }
    }

    /// A cluster of two workers running the fixture, with upload limits
    /// above Debian's php.ini defaults (2M per file, 8M per body); under
    /// `over`, with nginx in front of its FastCGI listener.
    fn start(self, extra: &[&str]) -> Served {
        let Some(keep_conn) = VIA.with(Cell::get) else {
            let cluster = self.cluster(extra);
            return Served {
                port: cluster.port,
                cluster,
                nginx: None,
            };
        };
        let (cluster, fastcgi) = Cluster::start_fastcgi(self.setup(extra));
        let public = fixture(self.name()).join("public");
        let nginx = deploy::nginx::Nginx::fastcgi(&fastcgi, &public, keep_conn);
        Served {
            port: nginx.port,
            cluster,
            nginx: Some(nginx),
        }
    }

    fn cluster(self, extra: &[&str]) -> Cluster {
        Cluster::start(self.setup(extra))
    }

    fn setup(self, extra: &[&str]) -> Setup<'static> {
        let mut args: Vec<String> = [
            "--php-ini",
            "upload_max_filesize=16M",
            "--php-ini",
            "post_max_size=32M",
            "--max-requests",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        Setup {
            app: fixture(self.name()),
            bridge: "httpKernel",
            bootstrap: self.name(),
            workers: 2,
            extra: args,
            wait_ready: true,
        }
    }
}

thread_local! {
    /// Some(fastcgi_keep_conn) while a test runs its specification through
    /// nginx over FastCGI.
    static VIA: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Runs `spec` with nginx over FastCGI in front of every cluster it starts.
fn over(keep_conn: bool, spec: impl FnOnce()) {
    VIA.with(|via| via.set(Some(keep_conn)));
    spec();
    VIA.with(|via| via.set(None));
}

/// A cluster as a specification reaches it: directly, or through nginx
/// (whose port and URLs these then are).
struct Served {
    port: u16,
    cluster: Cluster,
    nginx: Option<deploy::nginx::Nginx>,
}

impl Served {
    fn url(&self, path: &str) -> String {
        match &self.nginx {
            Some(nginx) => nginx.url(path),
            None => self.cluster.url(path),
        }
    }

    fn log_text(&self) -> String {
        let nginx = self.nginx.as_ref().map(|n| n.logs()).unwrap_or_default();
        format!("{}{nginx}", self.cluster.log_text())
    }
}

impl std::ops::Deref for Served {
    type Target = Cluster;

    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

/// A client with its own cookie jar, like a browser.
fn browser() -> Client {
    Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

fn json(response: Response) -> Value {
    let status = response.status();
    let text = response.text().unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
}

/// What the app recorded after a response (GET /report?id=...), waited
/// for; the record (a file in PHP's temporary directory) is removed.
fn wait_for_report(cluster: &Cluster, id: &str) -> Value {
    let client = http();
    let report = wait_until(Duration::from_secs(15), || {
        let response = client
            .get(cluster.url("/report"))
            .query(&[("id", id)])
            .send()
            .ok()?;
        (response.status() == 200).then(|| json(response))
    })
    .unwrap_or_else(|| panic!("no report {id}; log:\n{}", cluster.log_text()));
    let record = std::env::temp_dir()
        .join("ppm-fixture-markers")
        .join(format!("{id}.json"));
    let _ = std::fs::remove_file(record);
    report
}

fn unique_id(what: &str) -> String {
    format!(
        "{what}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// Seconds since the Unix epoch, as PHP's microtime(true).
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Reproducible bytes that do not compress and cover all 256 values.
fn blob(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// SHA-1 as PHP's sha1_file() prints it.
fn sha1_hex(data: &[u8]) -> String {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&(data.len() as u64 * 8).to_be_bytes());
    for block in message.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes(word.try_into().unwrap());
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, word) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*word);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (state, value) in h.iter_mut().zip([a, b, c, d, e]) {
            *state = state.wrapping_add(value);
        }
    }
    h.iter().map(|word| format!("{word:08x}")).collect()
}

#[test]
fn sha1_of_the_test_helper_matches_the_standard_vectors() {
    assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    assert_eq!(sha1_hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
}
