//! Embeds the PHP worker runtime (`bridges/`, files listed in
//! `bridges/FILES`) into the binary, so an installed `ppm` works outside
//! the source tree, and compiles the C shim that hosts PHP
//! (`src/workers/native/sapi.c`) against the PHP that `php-config8.2` (or
//! `$PHP_CONFIG`) describes.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    embed_runtime();
    build_shim();
}

/// Compiles the SAPI shim and links the PHP embed library.
fn build_shim() {
    println!("cargo:rerun-if-env-changed=PHP_CONFIG");
    const SOURCES: [&str; 5] = [
        "src/workers/native/sapi.c",
        "src/workers/native/classic.c",
        "src/workers/native/ini.c",
        "src/workers/native/backtrace.c",
        "src/workers/native/request_state.c",
    ];
    for file in SOURCES.iter().chain(&[
        "src/workers/native/sapi.h",
        "src/workers/native/sapi_parts.h",
    ]) {
        println!("cargo:rerun-if-changed={file}");
    }
    let php_config = std::env::var("PHP_CONFIG").unwrap_or_else(|_| "php-config8.2".into());
    let includes = std::process::Command::new(&php_config)
        .arg("--includes")
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run {php_config} ({err}): install php8.2-dev (scripts/install-deps) \
                 or set PHP_CONFIG to another PHP's php-config"
            )
        });
    assert!(includes.status.success(), "{php_config} --includes failed");
    let includes = String::from_utf8(includes.stdout).expect("php-config prints UTF-8");
    let mut build = cc::Build::new();
    build
        .files(SOURCES)
        // PHP's headers use GNU extensions (memrchr).
        .define("_GNU_SOURCE", None)
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true);
    for dir in includes.split_whitespace() {
        build.include(dir.trim_start_matches("-I"));
    }
    build.compile("ppmsapi");
    let ask = |option: &str| {
        std::process::Command::new(&php_config)
            .arg(option)
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|text| text.trim().to_string())
    };
    let lib_dir = ask("--prefix")
        .map(|prefix| format!("{prefix}/lib"))
        .unwrap_or_else(|| "/usr/lib".into());
    println!("cargo:rustc-link-search=native={lib_dir}");
    // Debian names the embed library after the version (libphp8.2.so, the
    // libphpX.Y-embed package); PHP built from source with --enable-embed
    // installs libphp.so. The versioned name is taken when it exists, so
    // that a machine with several PHPs links the one php-config names.
    // Either way the library's SONAME is the unversioned libphp.so, so the
    // binary also checks the loaded version at start.
    let major_minor = ask("--version")
        .and_then(|v| {
            let mut parts = v.split('.');
            Some(format!("{}.{}", parts.next()?, parts.next()?))
        })
        .unwrap_or_default();
    let versioned = format!("php{major_minor}");
    let lib = if Path::new(&lib_dir)
        .join(format!("lib{versioned}.so"))
        .exists()
    {
        versioned
    } else {
        "php".to_string()
    };
    println!("cargo:rustc-link-lib=dylib={lib}");
}

fn embed_runtime() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("bridges");
    let list = root.join("FILES");
    println!("cargo:rerun-if-changed={}", root.display());
    println!("cargo:rerun-if-changed={}", list.display());
    let text = std::fs::read_to_string(&list).expect("bridges/FILES lists the runtime files");
    let mut out = String::from("/// The runtime files: path relative to `bridges/`, contents.\n");
    out.push_str("pub static FILES: &[(&str, &[u8])] = &[\n");
    for name in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let path = root.join(name);
        assert!(
            path.is_file(),
            "bridges/FILES names {name}, which does not exist"
        );
        println!("cargo:rerun-if-changed={}", path.display());
        writeln!(
            out,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("runtime_files.rs");
    std::fs::write(dest, out).unwrap();
}
