#!/usr/bin/env bash
# Hello world on one worker reached directly (`ppm worker --listen`, no
# master): the native runtime (PHP hosted in the ppm process through ppm's
# SAPI) against the php-cgi runtime (php-cgi running the userland HTTP
# server in bridges/). Prints requests/s, p99 latency, and the CPU time
# per request of the process that runs PHP (from /proc/PID/stat before
# and after: php-cgi for the cgi runtime, ppm itself for the native one,
# whose main thread runs PHP and serves HTTP).
#
#   bench/native.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
connections=${2:-2}
app=examples/hello
source bench/lib.sh

# cpu_ticks PID -> utime + stime in clock ticks
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# thread_ticks PID -> utime + stime of the main thread (PHP's, in the native runtime)
thread_ticks() { awk '{ print $14 + $15 }' "/proc/$1/task/$1/stat"; }

# measure RUNTIME -> "requests_per_second p99_ms failed cpu_us_per_request php_thread_us_per_request"
measure() {
  local port; port=$(free_ports 1)
  "$ppm" worker "$app" --bridge=callable --bootstrap=app.php --runtime "$1" \
    --listen "127.0.0.1:$port" 2>"$work/worker-$1.log" &
  local ppm_pid=$!
  pids+=("$ppm_pid")
  wait_http "http://127.0.0.1:$port/"
  local php_pid=$ppm_pid
  if [ "$1" = cgi ]; then php_pid=$(pgrep -P "$ppm_pid" | head -1); fi
  local before; before=$(cpu_ticks "$php_pid")
  local main_before; main_before=$(thread_ticks "$php_pid")
  local result; result=$(run_wrk "http://127.0.0.1:$port/" "$duration" "$connections")
  local after; after=$(cpu_ticks "$php_pid")
  local main_after; main_after=$(thread_ticks "$php_pid")
  local total; total=$(awk '/requests in/ { print $1 }' "$work/wrk.txt")
  kill -TERM "$ppm_pid"; wait "$ppm_pid" 2>/dev/null || true
  echo "$result $(python3 -c "print(f'{($after - $before) / $hz / $total * 1e6:.1f} {($main_after - $main_before) / $hz / $total * 1e6:.1f}')")"
}

read -r cgi_rps cgi_p99 cgi_failed cgi_cpu _ < <(measure cgi)
read -r native_rps native_p99 native_failed native_cpu native_php_cpu < <(measure native)

printf '%-38s %11s %8s %7s %13s %7s\n' "hello world, $connections connections, ${duration}s" "requests/s" "p99 ms" "failed" "CPU µs/req" "ratio"
printf '%-38s %11s %8s %7s %13s %7s\n' "ppm worker --runtime cgi (php-cgi)" "$cgi_rps" "$cgi_p99" "$cgi_failed" "$cgi_cpu" "1.00"
printf '%-38s %11s %8s %7s %13s %7s\n' "ppm worker --runtime native" "$native_rps" "$native_p99" "$native_failed" "$native_cpu" "$(ratio "$native_rps" "$cgi_rps")"
echo "native: of its CPU per request, ${native_php_cpu} µs on its main thread (PHP and the HTTP server)"
