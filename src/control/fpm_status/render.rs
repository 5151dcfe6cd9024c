//! The status page in php-fpm 8.2's five formats, byte for byte where
//! php-fpm is particular (field names, padding, `0.00` CPU figures, the
//! order of the OpenMetrics lines).

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use super::{Format, FpmProcess, FpmStatus};

/// A value as each format writes it.
enum Value<'a> {
    Text(&'a str),
    Int(u64),
    /// A time: Unix seconds in JSON and XML, a log date in text and HTML.
    Time(u64),
    /// Two decimals, as php-fpm prints CPU percentages.
    Fixed(f64),
}

impl Value<'_> {
    fn human(&self) -> String {
        match self {
            Value::Text(s) => s.to_string(),
            Value::Int(n) => n.to_string(),
            Value::Time(t) => {
                crate::proxy::access_log::clf_time(UNIX_EPOCH + Duration::from_secs(*t))
            }
            Value::Fixed(f) => format!("{f:.2}"),
        }
    }

    fn machine(&self) -> String {
        match self {
            Value::Text(s) => s.to_string(),
            Value::Int(n) | Value::Time(n) => n.to_string(),
            Value::Fixed(f) => format!("{f:.2}"),
        }
    }

    fn json(&self) -> String {
        match self {
            Value::Text(s) => serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()),
            _ => self.machine(),
        }
    }
}

fn pool_fields(s: &FpmStatus) -> Vec<(&'static str, Value<'_>)> {
    let int = |n: usize| Value::Int(n as u64);
    vec![
        ("pool", Value::Text(&s.pool)),
        ("process manager", Value::Text(&s.process_manager)),
        ("start time", Value::Time(s.start_time)),
        ("start since", Value::Int(s.start_since)),
        ("accepted conn", Value::Int(s.accepted_conn)),
        ("listen queue", int(s.listen_queue)),
        ("max listen queue", int(s.max_listen_queue)),
        ("listen queue len", int(s.listen_queue_len)),
        ("idle processes", int(s.idle_processes)),
        ("active processes", int(s.active_processes)),
        ("total processes", int(s.total_processes)),
        ("max active processes", int(s.max_active_processes)),
        ("max children reached", Value::Int(s.max_children_reached)),
        ("slow requests", Value::Int(s.slow_requests)),
    ]
}

/// A process's fields; the text format spells one of them `request URI`.
fn process_fields(p: &FpmProcess) -> Vec<(&'static str, Value<'_>)> {
    vec![
        ("pid", Value::Int(u64::from(p.pid))),
        ("state", Value::Text(p.state)),
        ("start time", Value::Time(p.start_time)),
        ("start since", Value::Int(p.start_since)),
        ("requests", Value::Int(p.requests)),
        ("request duration", Value::Int(p.request_duration)),
        ("request method", Value::Text(&p.request_method)),
        ("request uri", Value::Text(&p.request_uri)),
        ("content length", Value::Int(p.content_length)),
        ("user", Value::Text(&p.user)),
        ("script", Value::Text(&p.script)),
        ("last request cpu", Value::Fixed(p.last_request_cpu)),
        ("last request memory", Value::Int(p.last_request_memory)),
    ]
}

/// The page's content type and body.
pub fn render(status: &FpmStatus, format: Format) -> (&'static str, String) {
    match format {
        Format::Text => ("text/plain;charset=UTF-8", text(status)),
        Format::Json => ("application/json", json(status)),
        Format::Xml => ("text/xml;charset=UTF-8", xml(status)),
        Format::Html => ("text/html;charset=UTF-8", html(status)),
        Format::OpenMetrics => (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            openmetrics(status),
        ),
    }
}

fn text(status: &FpmStatus) -> String {
    let mut out = String::new();
    let line = |out: &mut String, key: &str, value: &Value| {
        let _ = writeln!(out, "{:<22}{}", format!("{key}:"), value.human());
    };
    for (key, value) in pool_fields(status) {
        line(&mut out, key, &value);
    }
    for process in &status.processes {
        out.push_str("\n************************\n");
        for (key, value) in process_fields(process) {
            let key = if key == "request uri" {
                "request URI"
            } else {
                key
            };
            line(&mut out, key, &value);
        }
    }
    out
}

fn json(status: &FpmStatus) -> String {
    let object = |fields: Vec<(&str, Value)>| {
        let pairs: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("\"{k}\":{}", v.json()))
            .collect();
        pairs.join(",")
    };
    let mut out = format!("{{{}", object(pool_fields(status)));
    if !status.processes.is_empty() {
        let processes: Vec<String> = status
            .processes
            .iter()
            .map(|p| format!("{{{}}}", object(process_fields(p))))
            .collect();
        let _ = write!(out, ", \"processes\":[{}]", processes.join(","));
    }
    out.push('}');
    out
}

/// Escapes text for XML and HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn xml(status: &FpmStatus) -> String {
    let tag = |key: &str| key.replace(' ', "-");
    let mut out = String::from("<?xml version=\"1.0\" ?>\n<status>\n");
    for (key, value) in pool_fields(status) {
        let t = tag(key);
        let _ = writeln!(out, "<{t}>{}</{t}>", escape(&value.machine()));
    }
    if !status.processes.is_empty() {
        out.push_str("<processes>\n");
        for process in &status.processes {
            out.push_str("<process>");
            for (key, value) in process_fields(process) {
                let t = tag(key);
                let _ = write!(out, "<{t}>{}</{t}>", escape(&value.machine()));
            }
            out.push_str("</process>\n");
        }
        out.push_str("</processes>\n");
    }
    out.push_str("</status>\n");
    out
}

fn html(status: &FpmStatus) -> String {
    let mut out = String::from(
        "<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Strict//EN\" \"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd\">\n\
         <html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n\
         <head><title>PHP-FPM Status Page</title></head>\n<body>\n<table>\n",
    );
    for (key, value) in pool_fields(status) {
        let _ = writeln!(
            out,
            "<tr><th>{key}</th><td>{}</td></tr>",
            escape(&value.human())
        );
    }
    out.push_str("</table>\n");
    if status.processes.is_empty() {
        out.push_str("</body></html>");
        return out;
    }
    out.push_str("<table border=\"1\">\n<tr>");
    if let Some(first) = status.processes.first() {
        for (key, _) in process_fields(first) {
            let _ = write!(out, "<th>{key}</th>");
        }
    }
    out.push_str("</tr>\n");
    for process in &status.processes {
        out.push_str("<tr>");
        for (_, value) in process_fields(process) {
            let _ = write!(out, "<td>{}</td>", escape(&value.human()));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table></body></html>");
    out
}

/// php-fpm's OpenMetrics page: the same metric names, types and order
/// (php-fpm writes `listen_queue_length`'s TYPE before its HELP; so does
/// ppm). php-fpm has no per-process metrics, with or without `full`.
fn openmetrics(s: &FpmStatus) -> String {
    let metrics: [(&str, &str, &str, u64); 12] = [
        (
            "up",
            "gauge",
            &format!(
                "Could pool {} using a {} PM on ppm be reached?",
                s.pool, s.process_manager
            ),
            1,
        ),
        (
            "start_since",
            "counter",
            "The number of seconds since FPM has started.",
            s.start_since,
        ),
        (
            "accepted_connections",
            "counter",
            "The number of requests accepted by the pool.",
            s.accepted_conn,
        ),
        (
            "listen_queue",
            "gauge",
            "The number of requests in the queue of pending connections.",
            s.listen_queue as u64,
        ),
        (
            "max_listen_queue",
            "counter",
            "The maximum number of requests in the queue of pending connections since FPM has started.",
            s.max_listen_queue as u64,
        ),
        (
            "listen_queue_length",
            "gauge",
            "The size of the socket queue of pending connections.",
            s.listen_queue_len as u64,
        ),
        (
            "idle_processes",
            "gauge",
            "The number of idle processes.",
            s.idle_processes as u64,
        ),
        (
            "active_processes",
            "gauge",
            "The number of active processes.",
            s.active_processes as u64,
        ),
        (
            "total_processes",
            "gauge",
            "The number of idle + active processes.",
            s.total_processes as u64,
        ),
        (
            "max_active_processes",
            "counter",
            "The maximum number of active processes since FPM has started.",
            s.max_active_processes as u64,
        ),
        (
            "max_children_reached",
            "counter",
            "The number of times a request had to wait because every worker was busy.",
            s.max_children_reached,
        ),
        (
            "slow_requests",
            "counter",
            "The number of requests that exceeded --slow-request-time.",
            s.slow_requests,
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in metrics {
        if name == "listen_queue_length" {
            let _ = write!(
                out,
                "# TYPE phpfpm_{name} {kind}\n# HELP phpfpm_{name} {help}\n"
            );
        } else {
            let _ = write!(
                out,
                "# HELP phpfpm_{name} {help}\n# TYPE phpfpm_{name} {kind}\n"
            );
        }
        let _ = writeln!(out, "phpfpm_{name} {value}");
    }
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> FpmStatus {
        FpmStatus {
            pool: "www".into(),
            process_manager: "static".into(),
            start_time: 1_796_081_497,
            start_since: 4,
            accepted_conn: 9,
            listen_queue: 0,
            max_listen_queue: 2,
            listen_queue_len: 1024,
            idle_processes: 1,
            active_processes: 1,
            total_processes: 2,
            max_active_processes: 2,
            max_children_reached: 3,
            slow_requests: 0,
            processes: vec![FpmProcess {
                pid: 31378,
                state: "Running",
                start_time: 1_796_081_497,
                start_since: 4,
                requests: 5,
                request_duration: 102,
                request_method: "GET".into(),
                request_uri: "/status?full&xml".into(),
                content_length: 0,
                user: "-".into(),
                script: "-".into(),
                last_request_cpu: 0.0,
                last_request_memory: 0,
            }],
        }
    }

    #[test]
    fn text_is_padded_like_php_fpm() {
        let page = text(&status());
        assert!(page.starts_with("pool:                 www\nprocess manager:      static\nstart time:           30/Nov/2026:23:31:37 +0000\n"), "{page}");
        assert!(page.contains("\n\n************************\npid:                  31378\n"));
        assert!(page.contains("request URI:          /status?full&xml\n"));
        assert!(page.ends_with("last request cpu:     0.00\nlast request memory:  0\n"));
    }

    #[test]
    fn json_and_xml_use_php_fpms_names() {
        let page = json(&status());
        let parsed: serde_json::Value = serde_json::from_str(&page).unwrap();
        assert_eq!(parsed["max children reached"], 3);
        assert_eq!(parsed["processes"][0]["request uri"], "/status?full&xml");
        assert!(page.contains("\"last request cpu\":0.00"), "{page}");
        let page = xml(&status());
        assert!(page.contains("<max-listen-queue>2</max-listen-queue>\n"));
        assert!(page.contains("<request-uri>/status?full&amp;xml</request-uri>"));
    }

    #[test]
    fn openmetrics_ends_with_eof() {
        let page = openmetrics(&status());
        assert!(page.ends_with("phpfpm_slow_requests 0\n# EOF\n"));
        assert!(page.contains("# TYPE phpfpm_listen_queue_length gauge\n# HELP"));
    }
}
