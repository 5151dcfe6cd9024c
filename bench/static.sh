#!/usr/bin/env bash
# Static file throughput: ppm --static-directory (answered by the master,
# no PHP involved) against nginx serving the same directory, for a small
# and a 64 KiB file. Access logs are off on both sides. Prints requests/s,
# p99 latency and the ratio ppm / nginx.
#
#   bench/static.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
connections=${2:-16}
app=examples/hello
command -v nginx >/dev/null || { echo "nginx is missing: apt-get install nginx" >&2; exit 1; }
source bench/lib.sh

public="$work/public"
mkdir -p "$public"
python3 - "$public" <<'PY'
import os, sys
d = sys.argv[1]
open(os.path.join(d, "index.html"), "w").write("<!doctype html><title>ppm</title>" + "x" * 990)
open(os.path.join(d, "app.js"), "wb").write(bytes((i * 7) % 256 for i in range(64 * 1024)))
PY
chmod -R a+rX "$work"

nginx_port=$(free_ports 1)
cat > "$work/nginx.conf" <<CONF
worker_processes 2;
daemon off;
user root root;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 1024; }
http {
  include /etc/nginx/mime.types;
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  client_body_temp_path $work/nginx-body;
  proxy_temp_path $work/nginx-proxy;
  fastcgi_temp_path $work/nginx-fastcgi;
  uwsgi_temp_path $work/nginx-uwsgi;
  scgi_temp_path $work/nginx-scgi;
  server {
    listen 127.0.0.1:$nginx_port;
    root $public;
  }
}
CONF
nginx -c "$work/nginx.conf" -p "$work" &
pids+=($!)
wait_http "http://127.0.0.1:$nginx_port/index.html"
read -r nginx_small_rps nginx_small_p99 nginx_small_failed < <(run_wrk "http://127.0.0.1:$nginx_port/index.html" "$duration" "$connections")
read -r nginx_large_rps nginx_large_p99 nginx_large_failed < <(run_wrk "http://127.0.0.1:$nginx_port/app.js" "$duration" "$connections")
kill -TERM "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

start_ppm 1 "$app" --bridge=callable --bootstrap=app.php --static-directory "$public" --no-logging
wait_http "http://127.0.0.1:$balancer/index.html"
read -r ppm_small_rps ppm_small_p99 ppm_small_failed < <(run_wrk "http://127.0.0.1:$balancer/index.html" "$duration" "$connections")
read -r ppm_large_rps ppm_large_p99 ppm_large_failed < <(run_wrk "http://127.0.0.1:$balancer/app.js" "$duration" "$connections")
"$ppm" stop "$control" >/dev/null

printf '%-34s %11s %9s %7s %7s\n' "static files, $connections connections, ${duration}s" "requests/s" "p99 ms" "failed" "ratio"
printf '%-34s %11s %9s %7s %7s\n' "nginx, 1 KiB index.html" "$nginx_small_rps" "$nginx_small_p99" "$nginx_small_failed" "1.00"
printf '%-34s %11s %9s %7s %7s\n' "ppm, 1 KiB index.html" "$ppm_small_rps" "$ppm_small_p99" "$ppm_small_failed" "$(ratio "$ppm_small_rps" "$nginx_small_rps")"
printf '%-34s %11s %9s %7s %7s\n' "nginx, 64 KiB app.js" "$nginx_large_rps" "$nginx_large_p99" "$nginx_large_failed" "1.00"
printf '%-34s %11s %9s %7s %7s\n' "ppm, 64 KiB app.js" "$ppm_large_rps" "$ppm_large_p99" "$ppm_large_failed" "$(ratio "$ppm_large_rps" "$nginx_large_rps")"
