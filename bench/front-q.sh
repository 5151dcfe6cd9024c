#!/usr/bin/env bash
# The balancing hop, measured against the proxies operators know: hello
# world on two PHP workers through ppm's master, through haproxy and
# through nginx (each balancing two standalone `ppm worker --listen`
# processes), and one worker reached directly as the ceiling. Reports
# requests/s, p99 latency and the CPU time per request of the balancing
# process alone (ppm's master without its workers, haproxy, nginx's
# processes), from /proc before and after the run. Then the same load
# again while one more client keeps a 0.9 s request (`/stream`) running:
# the p99 of the quick requests shows whether a balancer queues a request
# behind a busy worker (nginx's keepalive upstream does; ppm's master and
# haproxy with `maxconn 1` hand a request only to an idle worker).
#
#   bench/front.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
connections=${2:-16}
app=examples/hello
haproxy=${HAPROXY:-/usr/sbin/haproxy}
nginx=${NGINX:-/usr/sbin/nginx}
[ -x "$haproxy" ] || { echo "$haproxy is missing: apt-get install haproxy" >&2; exit 1; }
[ -x "$nginx" ] || { echo "$nginx is missing: apt-get install nginx" >&2; exit 1; }
source /tmp/lib.sh

warm_up() { wrk -t1 -c"$connections" -d2s "$1" >/dev/null; }

# measure URL TICKS_FN PID... -> "requests/s p99 failed balancer_cpu_us_per_request"
measure() {
  local url=$1 ticks=$2; shift 2
  warm_up "$url"
  local before after rps p99 failed requests
  before=$($ticks "$@")
  read -r rps p99 failed < <(run_wrk "$url" "$duration" "$connections")
  after=$($ticks "$@")
  requests=$(awk '/requests in/ { print $1 }' "$work/wrk.txt")
  echo "$rps $p99 $failed $(python3 -c "print(f'{($after - $before) * 1e6 / $(getconf CLK_TCK) / max($requests, 1):.1f}')")"
}

# mixed BASE_URL -> "requests/s p99_ms" of quick requests while one client
# loops on the slow /stream.
mixed() {
  ( while curl -fsS -o /dev/null "$1/stream" 2>/dev/null; do :; done ) &
  local loop=$!
  sleep 0.3
  local rps p99 failed
  read -r rps p99 failed < <(run_wrk "$1/" 5 "$connections")
  kill "$loop"; wait "$loop" 2>/dev/null || true
  sleep 1  # the last /stream ends
  echo "$rps $p99"
}

# --- two standalone workers, the backends of haproxy and nginx -------------------
w1=$(free_ports 1)
w2=$(free_ports 1)
for port in "$w1" "$w2"; do
  "$ppm" worker "$app" --bridge=callable --bootstrap=app.php --listen "127.0.0.1:$port" \
    2>"$work/worker-$port.log" &
  pids+=($!)
  wait_http "http://127.0.0.1:$port/"
done

read -r direct_rps direct_p99 direct_failed _ < <(measure "http://127.0.0.1:$w1/" self_ticks "${pids[0]}")

# --- haproxy ---------------------------------------------------------------------
# maxconn 1: a worker runs one request at a time, so haproxy queues the
# rest itself, as ppm's master does (ppm's docker/haproxy.cfg does the same).
# nbthread 1: with its default of a thread per core, haproxy's queue
# handoff between threads collapses on a small machine (about 1,200
# requests/s and 500 µs of CPU per request on 2 cores, against about
# 9,700 with one thread), which would flatter every comparison.
hport=$(free_ports 1)
cat >"$work/haproxy.cfg" <<EOF
global
    maxconn 4096
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout queue 60s
    option http-keep-alive
frontend front
    bind 127.0.0.1:$hport
    default_backend workers
backend workers
    balance roundrobin
    http-reuse always
    server w1 127.0.0.1:$w1 maxconn 1
    server w2 127.0.0.1:$w2 maxconn 1
EOF
"$haproxy" -f "$work/haproxy.cfg" -db 2>"$work/haproxy.log" &
pids+=($!)
haproxy_pid=$!
wait_http "http://127.0.0.1:$hport/"
read -r ha_rps ha_p99 ha_failed ha_cpu < <(measure "http://127.0.0.1:$hport/" self_ticks "$haproxy_pid")
read -r ha_mixed_rps ha_mixed_p99 < <(mixed "http://127.0.0.1:$hport")
kill -TERM "$haproxy_pid"; wait "$haproxy_pid" 2>/dev/null || true

# --- nginx -----------------------------------------------------------------------
nport=$(free_ports 1)
cat >"$work/site.conf" <<EOF
upstream workers {
    server 127.0.0.1:$w1;
    server 127.0.0.1:$w2;
    keepalive 32;
}
server {
    listen 127.0.0.1:$nport;
    location / {
        proxy_pass http://workers;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
    }
}
EOF
start_nginx "$work/nginx" "$work/site.conf"
wait_http "http://127.0.0.1:$nport/"
read -r ng_rps ng_p99 ng_failed ng_cpu < <(measure "http://127.0.0.1:$nport/" cpu_ticks "$nginx_pid")
read -r ng_mixed_rps ng_mixed_p99 < <(mixed "http://127.0.0.1:$nport")
kill -TERM "$nginx_pid"; wait "$nginx_pid" 2>/dev/null || true
for p in "${pids[@]:0:2}"; do kill -TERM "$p"; wait "$p" 2>/dev/null || true; done

# --- ppm's master with two workers -----------------------------------------------
# Without its access log first, as haproxy and nginx run here (neither
# logs), then with it, as ppm runs by default.
start_ppm 2 "$app" --bridge=callable --bootstrap=app.php --max-requests=0 --no-logging
master_pid=${pids[-1]}
read -r ppm_rps ppm_p99 ppm_failed ppm_cpu < <(measure "http://127.0.0.1:$balancer/" self_ticks "$master_pid")
read -r ppm_mixed_rps ppm_mixed_p99 < <(mixed "http://127.0.0.1:$balancer")
"$ppm" stop "$control" >/dev/null
start_ppm 2 "$app" --bridge=callable --bootstrap=app.php --max-requests=0
master_pid=${pids[-1]}
read -r log_rps log_p99 log_failed log_cpu < <(measure "http://127.0.0.1:$balancer/" self_ticks "$master_pid")
"$ppm" stop "$control" >/dev/null

row() { printf '%-36s %11s %8s %7s %15s %9s %9s\n' "$@"; }
row "hello world, 2 workers, $connections conns, ${duration}s" "requests/s" "p99 ms" "failed" "balancer µs/req" "rps/hap" "cpu/hap"
row "one worker, direct (no balancer)" "$direct_rps" "$direct_p99" "$direct_failed" "-" "$(ratio "$direct_rps" "$ha_rps")" "-"
row "haproxy → 2 workers (maxconn 1)" "$ha_rps" "$ha_p99" "$ha_failed" "$ha_cpu" "1.00" "1.00"
row "nginx → 2 workers (keepalive)" "$ng_rps" "$ng_p99" "$ng_failed" "$ng_cpu" "$(ratio "$ng_rps" "$ha_rps")" "$(ratio "$ng_cpu" "$ha_cpu")"
row "ppm start, 2 workers" "$ppm_rps" "$ppm_p99" "$ppm_failed" "$ppm_cpu" "$(ratio "$ppm_rps" "$ha_rps")" "$(ratio "$ppm_cpu" "$ha_cpu")"
row "ppm start, access log to a file" "$log_rps" "$log_p99" "$log_failed" "$log_cpu" "$(ratio "$log_rps" "$ha_rps")" "$(ratio "$log_cpu" "$ha_cpu")"
echo
row2() { printf '%-36s %11s %8s\n' "$@"; }
row2 "with a 0.9 s request running beside" "requests/s" "p99 ms"
row2 "haproxy → 2 workers (maxconn 1)" "$ha_mixed_rps" "$ha_mixed_p99"
row2 "nginx → 2 workers (keepalive)" "$ng_mixed_rps" "$ng_mixed_p99"
row2 "ppm start, 2 workers" "$ppm_mixed_rps" "$ppm_mixed_p99"
