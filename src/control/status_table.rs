//! `ppm status`'s table: one row per slot, states in colour on a
//! terminal, and the slots' last errors in full below it when they do not
//! fit their column.

use crate::control::status::ClusterStatus;

/// The human-readable form of a status.
pub fn render_table(status: &ClusterStatus, colour: bool) -> String {
    let mut out = format!(
        "ppm master {} · {} · bridge {} ({}) · balancer {} · up {}s\n",
        status.info.master_pid,
        status.info.pool.app_dir.display(),
        status.info.pool.bridge,
        status.info.pool.bootstrap,
        status.info.pool.balancer,
        status.uptime_seconds
    );
    out.push_str(&format!(
        "workers: {} total, {} ready, {} busy · pm {}{} · queue {} · {} requests{}\n\n",
        status.total_workers,
        status.ready_workers,
        status.busy_workers,
        if status.pm.mode.is_empty() {
            "static"
        } else {
            &status.pm.mode
        },
        if status.pm.mode.is_empty() || status.pm.mode == "static" {
            String::new()
        } else {
            format!(
                " ({} spawned, {} retired, max reached {})",
                status.pm.spawned, status.pm.retired, status.pm.max_workers_reached
            )
        },
        status.queue_length,
        status.requests_total,
        if status.shutting_down {
            " · shutting down"
        } else {
            ""
        }
    ));
    for pool in &status.pools {
        out.push_str(&format!(
            "pool {} · {} · bridge {} ({}) · balancer {} · {}/{} workers · pm {} · queue {} · {} requests{}\n",
            pool.name,
            pool.info.app_dir.display(),
            pool.info.bridge,
            pool.info.bootstrap,
            pool.info.balancer,
            pool.ready_workers + pool.busy_workers,
            pool.total_workers,
            pool.pm.mode,
            pool.queue_length,
            pool.requests_total,
            if pool.ever_ready { "" } else { " · never booted" },
        ));
    }
    if !status.pools.is_empty() {
        out.push('\n');
    }
    // The pool column only when there are pools to tell apart.
    let named = !status.pools.is_empty();
    let header = [
        "POOL",
        "SLOT",
        "PORT",
        "STATE",
        "PID",
        "REQUESTS",
        "MEMORY",
        "RESTARTS",
        "LAST ERROR",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    let mut errors_below: Vec<(String, String)> = Vec::new();
    for w in &status.workers {
        let text = |key: &str| match &w[key] {
            serde_json::Value::Null => "-".to_string(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let memory = w["memory_bytes"].as_u64().unwrap_or(0);
        let full_error = text("last_error");
        let first_line = full_error.lines().next().unwrap_or("-");
        let last_error = if first_line.chars().count() > 60 || full_error.contains('\n') {
            // Shown whole below the table: the file and line are at its end.
            let slot = if named {
                format!("{} {}", text("pool"), text("slot"))
            } else {
                text("slot")
            };
            errors_below.push((slot, full_error.clone()));
            let cut: String = first_line.chars().take(59).collect();
            format!("{cut}… (below)")
        } else {
            first_line.to_string()
        };
        rows.push(vec![
            text("pool"),
            text("slot"),
            text("port"),
            text("state"),
            text("pid"),
            text("requests"),
            format!("{:.1} MiB", memory as f64 / 1048576.0),
            text("restarts"),
            last_error,
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .filter(|(column, _)| named || *column != 0)
            .map(|(column, (cell, w))| {
                let padded = format!("{cell:<w$}");
                match (colour, column) {
                    (true, 3) => paint_state(cell, padded),
                    _ => padded,
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for (slot, error) in errors_below {
        out.push_str(&format!("\nslot {slot} last error:\n"));
        for line in error.lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

/// Colours a state cell for a terminal: green serving, yellow changing,
/// red failing.
fn paint_state(state: &str, padded: String) -> String {
    let code = match state {
        "ready" | "busy" => "32",
        "starting" | "draining" | "stopping" | "exited" => "33",
        "empty" => "2",
        "backoff" | "failed" => "31",
        _ => return padded,
    };
    format!("\x1b[{code}m{padded}\x1b[0m")
}
