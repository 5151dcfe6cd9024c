//! The access log: one line per request, nginx's `combined` format plus
//! the request time, the time spent queued for a worker, the slot and the
//! request id; or the same fields as one JSON object per line
//! (`--log-format json`).
//!
//! Lines are formatted on the request path and handed through a channel
//! to one writer thread, so no async thread ever waits for the disk. The
//! thread writes what it has, then flushes whenever the channel runs
//! empty, and gathers lines for a few milliseconds before it sleeps.
//! `reopen` (on `SIGUSR1`) goes through the same channel: every line sent
//! before it lands in the old file (logrotate has already renamed it),
//! every line after it in a new file of the configured name, so rotation
//! loses no line.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the writer waits for more lines after writing what it had,
/// before it blocks (see the writer loop).
const GATHER: Duration = Duration::from_millis(5);

/// Line format (parsed by config).
pub use crate::config::LogFormat as Format;

/// One request, as logged.
#[derive(Debug, Clone)]
pub struct Record {
    pub remote_addr: IpAddr,
    /// When the request started arriving.
    pub time: SystemTime,
    pub method: String,
    pub uri: String,
    pub protocol: &'static str,
    pub status: u16,
    /// Body bytes sent to the client.
    pub bytes_sent: u64,
    pub referer: Option<String>,
    pub user_agent: Option<String>,
    /// From the first byte of the request to the last byte of the response.
    pub request_time: Duration,
    /// Time spent waiting for a worker, when one was needed.
    pub queue_time: Option<Duration>,
    pub slot: Option<usize>,
    pub request_id: String,
}

enum Message {
    Line(String),
    Reopen,
    Flush(mpsc::Sender<()>),
}

/// A running access log.
pub struct AccessLog {
    format: Format,
    tx: Mutex<mpsc::Sender<Message>>,
}

impl AccessLog {
    /// Starts the writer thread for `file` (stdout when None). The file is
    /// opened (created, appended to) before this returns, so a path that
    /// cannot be written is a start-up error.
    pub fn start(file: Option<PathBuf>, format: Format) -> std::io::Result<AccessLog> {
        let open = |path: &PathBuf| OpenOptions::new().create(true).append(true).open(path);
        let out: Box<dyn Write + Send> = match &file {
            Some(path) => Box::new(open(path)?),
            None => Box::new(std::io::stdout()),
        };
        let (tx, rx) = mpsc::channel::<Message>();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut out = BufWriter::with_capacity(64 * 1024, out);
                let mut pending = rx.recv();
                while let Ok(message) = pending {
                    match message {
                        Message::Line(line) => {
                            if let Err(err) = out.write_all(line.as_bytes()) {
                                tracing::warn!("access log write failed: {err}");
                            }
                        }
                        Message::Reopen => {
                            let _ = out.flush();
                            if let Some(path) = &file {
                                match open(path) {
                                    Ok(new) => out = BufWriter::with_capacity(64 * 1024, Box::new(new)),
                                    Err(err) => tracing::error!(
                                        "cannot reopen the access log {}: {err}; still writing to the old file",
                                        path.display()
                                    ),
                                }
                            }
                        }
                        Message::Flush(done) => {
                            let _ = out.flush();
                            let _ = done.send(());
                        }
                    }
                    pending = match rx.try_recv() {
                        Ok(message) => Ok(message),
                        Err(mpsc::TryRecvError::Empty) => {
                            let _ = out.flush();
                            // Lines keep coming under load: gather them for
                            // a moment rather than block at once, since a
                            // blocked reader costs each sender a futex wake
                            // of this thread (a fifth of the master's CPU per
                            // request, measured). A line after a quiet spell
                            // is still written at once.
                            std::thread::sleep(GATHER);
                            match rx.try_recv() {
                                Ok(message) => Ok(message),
                                Err(mpsc::TryRecvError::Empty) => rx.recv(),
                                Err(mpsc::TryRecvError::Disconnected) => break,
                            }
                        }
                        Err(mpsc::TryRecvError::Disconnected) => break,
                    };
                }
                let _ = out.flush();
            })?;
        Ok(AccessLog {
            format,
            tx: Mutex::new(tx),
        })
    }

    fn send(&self, message: Message) {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let _ = tx.send(message);
    }

    /// Queues one line.
    pub fn write(&self, record: &Record) {
        self.send(Message::Line(format(record, self.format)));
    }

    /// Makes the writer reopen its file (after logrotate moved it).
    pub fn reopen(&self) {
        self.send(Message::Reopen);
    }

    /// Waits (up to `timeout`) until every line queued so far is written.
    pub fn flush(&self, timeout: Duration) {
        let (done, wait) = mpsc::channel();
        self.send(Message::Flush(done));
        let _ = wait.recv_timeout(timeout);
    }
}

/// `SIGUSR1` reopens the access log file (logrotate's `postrotate`). The
/// handler is installed even without a log, so the signal never kills the
/// master.
pub async fn reopen_on_sigusr1(log: Option<std::sync::Arc<AccessLog>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        tracing::error!("cannot install the SIGUSR1 handler");
        return;
    };
    while usr1.recv().await.is_some() {
        tracing::info!("SIGUSR1 received: reopening the access log");
        if let Some(log) = &log {
            log.reopen();
        }
    }
}

/// One line of the log, newline included.
pub fn format(r: &Record, format: Format) -> String {
    match format {
        Format::Combined => {
            use crate::text::{push_ip, push_seconds, push_u64};
            let mut line = Vec::with_capacity(256);
            push_ip(&mut line, r.remote_addr);
            line.extend_from_slice(b" - - [");
            CLF_TIME.with(|cache| cache.push(&mut line, r.time, clf_time));
            line.extend_from_slice(b"] \"");
            escape_into(&mut line, &r.method);
            line.push(b' ');
            escape_into(&mut line, &r.uri);
            line.push(b' ');
            escape_into(&mut line, r.protocol);
            line.extend_from_slice(b"\" ");
            push_u64(&mut line, u64::from(r.status));
            line.push(b' ');
            push_u64(&mut line, r.bytes_sent);
            for quoted in [&r.referer, &r.user_agent] {
                line.extend_from_slice(b" \"");
                escape_into(&mut line, quoted.as_deref().unwrap_or("-"));
                line.push(b'"');
            }
            line.extend_from_slice(b" rt=");
            push_seconds(&mut line, r.request_time);
            line.extend_from_slice(b" qt=");
            match r.queue_time {
                Some(queued) => push_seconds(&mut line, queued),
                None => line.push(b'-'),
            }
            line.extend_from_slice(b" slot=");
            match r.slot {
                Some(slot) => push_u64(&mut line, slot as u64),
                None => line.push(b'-'),
            }
            line.extend_from_slice(b" id=");
            escape_into(&mut line, &r.request_id);
            line.push(b'\n');
            // Only ASCII was written: `escape_into` escapes the rest.
            String::from_utf8(line).unwrap_or_default()
        }
        Format::Json => {
            let mut line = serde_json::json!({
                "time": iso_time(r.time),
                "remote_addr": r.remote_addr.to_string(),
                "method": r.method,
                "uri": r.uri,
                "protocol": r.protocol,
                "status": r.status,
                "bytes_sent": r.bytes_sent,
                "referer": r.referer,
                "user_agent": r.user_agent,
                "request_time": (r.request_time.as_secs_f64() * 1000.0).round() / 1000.0,
                "queue_time": r.queue_time.map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0),
                "slot": r.slot,
                "request_id": r.request_id,
            })
            .to_string();
            line.push('\n');
            line
        }
    }
}

thread_local! {
    static CLF_TIME: crate::text::PerSecond = const { crate::text::PerSecond::new() };
}

/// nginx's escaping: `"`, `\` and bytes outside printable ASCII as `\xHH`.
fn escape_into(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in text.bytes() {
        if b == b'"' || b == b'\\' || !(b' '..=b'~').contains(&b) {
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.push(b);
        }
    }
}

/// (year, month 1-12, day, hour, minute, second, millis) in UTC.
fn civil(time: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rest / 3600) as u32,
        (rest % 3600 / 60) as u32,
        (rest % 60) as u32,
        since.subsec_millis(),
    )
}

/// `10/Oct/2000:13:55:36 +0000`
pub(crate) fn clf_time(time: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, _) = civil(time);
    format!(
        "{d:02}/{}/{y}:{h:02}:{mi:02}:{s:02} +0000",
        MONTHS[mo as usize - 1]
    )
}

/// `2000-10-10T13:55:36.123Z`
fn iso_time(time: SystemTime) -> String {
    let (y, mo, d, h, mi, s, ms) = civil(time);
    format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            remote_addr: "203.0.113.7".parse().unwrap(),
            time: UNIX_EPOCH + Duration::from_millis(971_186_136_250),
            method: "GET".into(),
            uri: "/a?b=\"c\"".into(),
            protocol: "HTTP/1.1",
            status: 200,
            bytes_sent: 12,
            referer: None,
            user_agent: Some("curl/8.0".into()),
            request_time: Duration::from_millis(1234),
            queue_time: Some(Duration::from_micros(500)),
            slot: Some(3),
            request_id: "abc".into(),
        }
    }

    #[test]
    fn combined_lines_look_like_nginx_with_extra_fields() {
        assert_eq!(
            format(&record(), Format::Combined),
            "203.0.113.7 - - [10/Oct/2000:13:55:36 +0000] \"GET /a?b=\\x22c\\x22 HTTP/1.1\" 200 12 \"-\" \"curl/8.0\" rt=1.234 qt=0.001 slot=3 id=abc\n"
        );
    }

    #[test]
    fn json_lines_hold_the_same_fields() {
        let line = format(&record(), Format::Json);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2000-10-10T13:55:36.250Z");
        assert_eq!(v["uri"], "/a?b=\"c\"");
        assert_eq!(v["slot"], 3);
        assert_eq!(v["request_time"], 1.234);
        assert!(v["referer"].is_null());
    }

    #[test]
    fn lines_reach_the_file_and_reopen_starts_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::start(Some(path.clone()), Format::Combined).unwrap();
        log.write(&record());
        std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        log.write(&record());
        log.reopen();
        log.write(&record());
        log.flush(Duration::from_secs(5));
        let old = std::fs::read_to_string(dir.path().join("access.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!((old.lines().count(), new.lines().count()), (2, 1));
    }
}
