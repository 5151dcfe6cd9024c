#!/usr/bin/env bash
# Hello world on one worker reached directly (`ppm worker --listen`, no
# master): the single-process baseline. Prints requests/s, p99 latency,
# and the CPU time per request of the ppm process, which hosts PHP (from
# /proc/PID/stat before and after), and how much of it is its main
# thread's, which runs PHP and serves HTTP.
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

# thread_ticks PID -> utime + stime of the main thread (PHP's)
thread_ticks() { awk '{ print $14 + $15 }' "/proc/$1/task/$1/stat"; }

port=$(free_ports 1)
"$ppm" worker "$app" --bridge=callable --bootstrap=app.php \
  --listen "127.0.0.1:$port" 2>"$work/worker.log" &
ppm_pid=$!
pids+=("$ppm_pid")
wait_http "http://127.0.0.1:$port/"
before=$(cpu_ticks "$ppm_pid")
main_before=$(thread_ticks "$ppm_pid")
read -r rps p99 failed < <(run_wrk "http://127.0.0.1:$port/" "$duration" "$connections")
after=$(cpu_ticks "$ppm_pid")
main_after=$(thread_ticks "$ppm_pid")
total=$(awk '/requests in/ { print $1 }' "$work/wrk.txt")
kill -TERM "$ppm_pid"; wait "$ppm_pid" 2>/dev/null || true
read -r cpu main_cpu < <(python3 -c "print(f'{($after - $before) / $hz / $total * 1e6:.1f} {($main_after - $main_before) / $hz / $total * 1e6:.1f}')")

printf '%-38s %11s %8s %7s %13s\n' "hello world, $connections connections, ${duration}s" "requests/s" "p99 ms" "failed" "CPU µs/req"
printf '%-38s %11s %8s %7s %13s\n' "ppm worker --listen" "$rps" "$p99" "$failed" "$cpu"
echo "of its CPU per request, ${main_cpu} µs on its main thread (PHP and the HTTP server)"
