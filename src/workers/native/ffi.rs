//! The C shim's interface (`sapi.h`): its entry points, and the leaf
//! callbacks it calls. A callback never calls into PHP and never unwinds:
//! a panic is caught and turned into the callback's neutral answer, and a
//! dead link (the master gone) ends the process (nothing is left to
//! answer to).

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::frames::Outcome;
use super::io::{IoError, WorkerIo};
use super::request::{Prepared, Script, Span};

/// `ppm_str`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PpmStr {
    ptr: *const c_char,
    len: usize,
}

/// `ppm_pair`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PpmPair {
    key: PpmStr,
    value: PpmStr,
}

/// `ppm_request`.
#[repr(C)]
pub struct PpmRequest {
    method: PpmStr,
    uri: PpmStr,
    query: PpmStr,
    content_type: PpmStr,
    content_length: i64,
    cookie: PpmStr,
    authorization: PpmStr,
    path_translated: PpmStr,
    server: *const PpmPair,
    server_len: usize,
    headers: *const PpmPair,
    headers_len: usize,
}

#[repr(C)]
struct PpmConfig {
    script: *const c_char,
    ini_entries: *const c_char,
    ini_path: *const c_char,
    config_json: *const c_char,
    classic: c_int,
}

extern "C" {
    fn ppm_php_run(config: *const PpmConfig) -> c_int;
}

const NULL_STR: PpmStr = PpmStr {
    ptr: std::ptr::null(),
    len: 0,
};

/// The worker's connection, and the C views of the current request.
struct State {
    io: WorkerIo,
    server: Vec<PpmPair>,
    headers: Vec<PpmPair>,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// What PHP runs: the worker script, settings, and the app's config.
pub struct RunConfig {
    pub script: CString,
    /// `key=value` lines, like `-d`.
    pub ini_entries: CString,
    /// `-c`: a php.ini file or directory.
    pub ini_path: Option<CString>,
    /// What `ppm_worker_config()` returns to the worker script.
    pub config_json: CString,
    /// `--bridge=script`: no worker script; each request runs its own.
    pub classic: bool,
}

/// Runs PHP on this thread, serving the requests of `io` until it says
/// stop; returns the process exit status.
pub fn run(io: WorkerIo, config: &RunConfig) -> i32 {
    STATE.with(|s| {
        *s.borrow_mut() = Some(State {
            io,
            server: Vec::new(),
            headers: Vec::new(),
        })
    });
    let c = PpmConfig {
        script: config.script.as_ptr(),
        ini_entries: config.ini_entries.as_ptr(),
        ini_path: config
            .ini_path
            .as_ref()
            .map_or(std::ptr::null(), |p| p.as_ptr()),
        config_json: config.config_json.as_ptr(),
        classic: c_int::from(config.classic),
    };
    // SAFETY: `c` and the strings it points to outlive the call; PHP runs
    // on this thread only.
    let status = unsafe { ppm_php_run(&c) };
    STATE.with(|s| s.borrow_mut().take());
    status
}

/// Runs `f` on the worker state; a dead master or a protocol error ends
/// the process, a panic returns `default`.
fn with_io<T>(default: T, f: impl FnOnce(&mut State) -> Result<T, IoError>) -> T {
    let result = catch_unwind(AssertUnwindSafe(|| {
        STATE.with(|s| match s.try_borrow_mut() {
            Ok(mut guard) => guard.as_mut().map(f),
            Err(_) => None,
        })
    }));
    match result {
        Ok(Some(Ok(value))) => value,
        Ok(Some(Err(err))) => {
            // No master to answer to: leave now, without running PHP's
            // shutdown (it would only write to the same dead socket).
            tracing::error!("{err}; the worker exits");
            // SAFETY: _exit ends the process without unwinding.
            unsafe { nix::libc::_exit(1) }
        }
        _ => default,
    }
}

fn str_of(p: &Prepared, span: Span) -> PpmStr {
    PpmStr {
        // SAFETY: spans lie inside the arena, and each is followed by its NUL.
        ptr: unsafe { p.arena.as_ptr().add(span.start) } as *const c_char,
        len: span.len,
    }
}

fn pairs_of(p: &Prepared, pairs: &[(Span, Span)], out: &mut Vec<PpmPair>) {
    out.clear();
    out.extend(pairs.iter().map(|(k, v)| PpmPair {
        key: str_of(p, *k),
        value: str_of(p, *v),
    }));
}

/// # Safety
/// `out` points to a `ppm_request` the caller owns.
#[no_mangle]
pub unsafe extern "C" fn ppm_rs_next_request(
    out: *mut PpmRequest,
    stats: c_int,
    memory: usize,
    peak: usize,
) -> c_int {
    with_io(0, |state| {
        let stats = (stats != 0).then_some((memory as u64, peak as u64));
        let State {
            io,
            server,
            headers,
        } = state;
        let Some(p) = io.next_request(stats)? else {
            return Ok(0);
        };
        pairs_of(p, &p.server, server);
        pairs_of(p, &p.headers, headers);
        let request = PpmRequest {
            method: str_of(p, p.method),
            uri: str_of(p, p.uri),
            query: str_of(p, p.query),
            content_type: p.content_type.map_or(NULL_STR, |s| str_of(p, s)),
            content_length: p
                .content_length
                .map_or(-1, |n| n.min(i64::MAX as u64) as i64),
            cookie: p.cookie.map_or(NULL_STR, |s| str_of(p, s)),
            authorization: p.authorization.map_or(NULL_STR, |s| str_of(p, s)),
            path_translated: str_of(p, p.path_translated),
            server: server.as_ptr(),
            server_len: server.len(),
            headers: headers.as_ptr(),
            headers_len: headers.len(),
        };
        // SAFETY: the caller passes a valid, writable ppm_request.
        unsafe { out.write(request) };
        Ok(1)
    })
}

/// # Safety
/// `buf` points to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn ppm_rs_read_body(buf: *mut c_char, len: usize) -> usize {
    if buf.is_null() || len == 0 {
        return 0;
    }
    // SAFETY: guaranteed by the caller.
    let buf = unsafe { std::slice::from_raw_parts_mut(buf as *mut u8, len) };
    with_io(0, |state| state.io.read_body(buf))
}

/// # Safety
/// `buf` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn ppm_rs_write(buf: *const c_char, len: usize) {
    if buf.is_null() || len == 0 {
        return;
    }
    // SAFETY: guaranteed by the caller.
    let data = unsafe { std::slice::from_raw_parts(buf as *const u8, len) };
    with_io((), |state| state.io.write(data))
}

#[no_mangle]
pub extern "C" fn ppm_rs_flush() {
    with_io((), |state| state.io.php_flush())
}

/// # Safety
/// `lines` points to `count` valid `ppm_str`.
#[no_mangle]
pub unsafe extern "C" fn ppm_rs_send_head(status: c_int, lines: *const PpmStr, count: usize) {
    let mut views: Vec<&[u8]> = Vec::with_capacity(count);
    for i in 0..count {
        // SAFETY: guaranteed by the caller.
        let line = unsafe { *lines.add(i) };
        if !line.ptr.is_null() {
            // SAFETY: as above.
            views.push(unsafe { std::slice::from_raw_parts(line.ptr as *const u8, line.len) });
        }
    }
    let status = u16::try_from(status).unwrap_or(500);
    with_io((), |state| state.io.send_head(status, &views))
}

#[no_mangle]
pub extern "C" fn ppm_rs_end_response(flags: c_int, outcome: c_int) {
    let outcome = Outcome::from_u8(outcome as u8).unwrap_or(Outcome::Fatal);
    with_io((), |state| state.io.end_response(flags as u8, outcome))
}

/// # Safety
/// `msg` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn ppm_rs_log(msg: *const c_char, len: usize) {
    let text = unsafe { lossy(msg, len) };
    with_io((), |state| {
        state.io.log(&text);
        Ok(())
    })
}

/// # Safety
/// `path` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn ppm_rs_included(path: *const c_char, len: usize) {
    let path = unsafe { lossy(path, len) };
    with_io((), |state| {
        state.io.included(&path);
        Ok(())
    })
}

/// # Safety
/// `value` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn ppm_rs_php_info(value: *const c_char, len: usize) {
    let memory_limit = unsafe { lossy(value, len) };
    with_io((), |state| {
        state.io.php_info(&memory_limit);
        Ok(())
    })
}

/// # Safety
/// `msg` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn ppm_rs_boot_error(msg: *const c_char, len: usize) {
    let text = unsafe { lossy(msg, len) };
    with_io((), |state| state.io.boot_error(&text))
}

/// # Safety
/// `text` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn ppm_rs_backtrace(text: *const c_char, len: usize) {
    let text = unsafe { lossy(text, len) };
    with_io((), |state| state.io.backtrace(&text))
}

#[no_mangle]
pub extern "C" fn ppm_rs_script_ended(outcome: c_int) {
    let outcome = Outcome::from_u8(outcome as u8).unwrap_or(Outcome::Fatal);
    with_io((), |state| state.io.script_ended(outcome))
}

/// # Safety
/// Both pointers point to their lengths of readable bytes.
#[no_mangle]
pub unsafe extern "C" fn ppm_rs_set_script(
    root: *const c_char,
    root_len: usize,
    name: *const c_char,
    name_len: usize,
) {
    let script = Script {
        document_root: unsafe { lossy(root, root_len) },
        script_name: unsafe { lossy(name, name_len) },
        path_info: None,
    };
    with_io((), |state| {
        state.io.set_script(script);
        Ok(())
    })
}

/// # Safety
/// `ptr` is NULL or points to `len` readable bytes.
unsafe fn lossy(ptr: *const c_char, len: usize) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: guaranteed by the caller.
    let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
    String::from_utf8_lossy(bytes).into_owned()
}

/// Keeps the callbacks in the link: the C archive that calls them comes
/// after the Rust code in the linker's order.
pub(crate) fn keep_callbacks() -> [*const (); 13] {
    [
        ppm_rs_next_request as *const (),
        ppm_rs_read_body as *const (),
        ppm_rs_write as *const (),
        ppm_rs_flush as *const (),
        ppm_rs_send_head as *const (),
        ppm_rs_end_response as *const (),
        ppm_rs_log as *const (),
        ppm_rs_boot_error as *const (),
        ppm_rs_script_ended as *const (),
        ppm_rs_set_script as *const (),
        ppm_rs_backtrace as *const (),
        ppm_rs_included as *const (),
        ppm_rs_php_info as *const (),
    ]
}
