//! Every bridge boots and answers on the native runtime: httpKernel with
//! Symfony and Laravel (uploads moved with the framework's own
//! `UploadedFile::move()`, which requires PHP's own upload files outside
//! test mode), psr15 (the body from `php://input`) and static.

mod common;

use common::native::NativeServer;
use common::*;
use serde_json::Value;

fn upload(server: &NativeServer) -> Value {
    let data = b"native upload\n".to_vec();
    let form = reqwest::blocking::multipart::Form::new()
        .text("note", "n")
        .part(
            "file",
            reqwest::blocking::multipart::Part::bytes(data).file_name("n.txt"),
        );
    let response = http()
        .post(server.url("/upload"))
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "{}", server.log_text());
    response.json().unwrap()
}

#[test]
fn symfony_answers_and_moves_uploads_on_the_native_runtime() {
    let server = NativeServer::start(
        &fixture("symfony"),
        &["--bridge", "httpKernel", "--bootstrap", "symfony"],
    );
    let hello = http().get(server.url("/hello")).send().unwrap();
    assert_eq!(hello.status().as_u16(), 200);
    assert_eq!(hello.text().unwrap().trim_end(), "Hello from Symfony");
    let moved = upload(&server);
    let sha1 = sha1_smol::Sha1::from(b"native upload\n")
        .digest()
        .to_string();
    assert_eq!(moved["sha1"], sha1.as_str(), "{moved}");
    assert_eq!(moved["moved_sha1"], sha1.as_str(), "{moved}");
}

#[test]
fn laravel_answers_and_moves_uploads_on_the_native_runtime() {
    let server = NativeServer::start(
        &fixture("laravel"),
        &["--bridge", "httpKernel", "--bootstrap", "laravel"],
    );
    let hello = http().get(server.url("/hello")).send().unwrap();
    assert_eq!(hello.status().as_u16(), 200);
    assert_eq!(hello.text().unwrap().trim_end(), "Hello from Laravel");
    let moved = upload(&server);
    assert_eq!(moved["moved_sha1"], moved["sha1"], "{moved}");
    assert!(moved["sha1"].is_string(), "{moved}");
}

#[test]
fn psr15_and_static_bridges_answer_on_the_native_runtime() {
    let server = NativeServer::start(
        &root().join("examples/psr15"),
        &["--bridge", "psr15", "--bootstrap", "app.php"],
    );
    let r = http().get(server.url("/json?name=ppm")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", server.log_text());
    let json: Value = r.json().unwrap();
    assert_eq!(json["name"], "ppm");

    let server = NativeServer::start(&fixture("basic"), &["--bridge", "static"]);
    let r = http().get(server.url("/anything")).send().unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[test]
fn a_custom_bootstrap_class_boots_on_the_native_runtime() {
    let server = NativeServer::start(
        &fixture("symfony"),
        &[
            "--bridge",
            "httpKernel",
            "--bootstrap",
            "App\\Ppm\\Bootstrap",
        ],
    );
    let hello = http().get(server.url("/hello")).send().unwrap();
    assert_eq!(hello.status().as_u16(), 200, "{}", server.log_text());
}
