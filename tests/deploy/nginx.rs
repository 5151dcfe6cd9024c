//! nginx from Debian in a temporary directory of its own, with its stock
//! `fastcgi_params` beside the configuration (where `include
//! fastcgi_params;` finds it), torn down on drop.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::super::common::{free_ports, http, wait_until};
use super::{render, Proc};

/// A running nginx.
pub struct Nginx {
    pub port: u16,
    pub dir: tempfile::TempDir,
    proc: Proc,
}

impl Nginx {
    /// The shipped docker/nginx-fastcgi.conf passing to `fastcgi` (ppm's
    /// `--fastcgi-listen` address), with `fastcgi_keep_conn` on or off.
    pub fn fastcgi(fastcgi: &str, public_dir: &Path, keep_conn: bool) -> Nginx {
        let port = free_ports(1);
        let mut site = render(
            "nginx-fastcgi.conf",
            &[
                ("PPM_FASTCGI", fastcgi.to_string()),
                ("PROXY_LISTEN", format!("127.0.0.1:{port}")),
                ("PUBLIC_DIR", public_dir.display().to_string()),
            ],
        );
        if !keep_conn {
            site = site.replace("fastcgi_keep_conn on;", "fastcgi_keep_conn off;");
        }
        Nginx::with_site(port, &site)
    }

    /// nginx serving `site` (an http {} block's contents) on `port`.
    pub fn with_site(port: u16, site: &str) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        std::fs::copy(
            "/etc/nginx/fastcgi_params",
            dir.path().join("fastcgi_params"),
        )
        .expect("nginx's stock fastcgi_params (apt-get install nginx)");
        std::fs::write(dir.path().join("site.conf"), site).unwrap();
        // Running as root, nginx's workers would be `nobody`, who cannot
        // enter the temporary directories.
        let user = if nix::unistd::Uid::effective().is_root() {
            "user root;"
        } else {
            ""
        };
        std::fs::write(
            dir.path().join("nginx.conf"),
            format!(
                "{user}\nworker_processes 1;\n\
                 pid {d}/nginx.pid;\n\
                 error_log {d}/error.log info;\n\
                 events {{ worker_connections 512; }}\n\
                 http {{\n\
                 include /etc/nginx/mime.types;\n\
                 access_log {d}/access.log;\n\
                 client_body_temp_path {d}/body;\n\
                 proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fastcgi;\n\
                 uwsgi_temp_path {d}/uwsgi;\n\
                 scgi_temp_path {d}/scgi;\n\
                 include {d}/site.conf;\n\
                 }}\n"
            ),
        )
        .unwrap();
        let proc = Proc::spawn(
            "nginx",
            Command::new("nginx")
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(dir.path().join("nginx.conf"))
                .args(["-g", "daemon off;"]),
            &dir.path().join("nginx.out"),
        );
        let nginx = Nginx { port, dir, proc };
        let url = nginx.url("/");
        let serving = wait_until(Duration::from_secs(20), || {
            http()
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .ok()
                .map(|_| ())
        });
        assert!(serving.is_some(), "nginx serves: {}", nginx.logs());
        nginx
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// nginx's own output and error log.
    pub fn logs(&self) -> String {
        format!(
            "{}\n{}",
            self.proc.log_text(),
            std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
        )
    }
}
