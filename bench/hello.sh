#!/usr/bin/env bash
# Hello-world throughput: ppm (1 and 2 workers, through the balancer)
# against one PHP worker reached directly (`ppm worker --listen`, no
# master in between). Prints requests/s, p99 latency and the ratios.
# Recycling is off (--max-requests=0), as it is for the direct worker:
# at thousands of requests per second the default of 1000 would boot a
# new PHP worker several times a second.
#
#   bench/hello.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
connections=${2:-16}
app=examples/hello
source bench/lib.sh

port=$(free_ports 1)
"$ppm" worker "$app" --bridge=callable --bootstrap=app.php --listen "127.0.0.1:$port" 2>"$work/worker.log" &
pids+=($!)
wait_http "http://127.0.0.1:$port/"
read -r direct_rps direct_p99 direct_failed < <(run_wrk "http://127.0.0.1:$port/" "$duration" "$connections")
kill -TERM "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

start_ppm 1 "$app" --bridge=callable --bootstrap=app.php --max-requests=0
read -r one_rps one_p99 one_failed < <(run_wrk "http://127.0.0.1:$balancer/" "$duration" "$connections")
"$ppm" stop "$control" >/dev/null
start_ppm 2 "$app" --bridge=callable --bootstrap=app.php --max-requests=0
read -r two_rps two_p99 two_failed < <(run_wrk "http://127.0.0.1:$balancer/" "$duration" "$connections")
"$ppm" stop "$control" >/dev/null

printf '%-34s %11s %9s %7s %7s\n' "hello world, $connections connections, ${duration}s" "requests/s" "p99 ms" "failed" "ratio"
printf '%-34s %11s %9s %7s %7s\n' "ppm worker --listen (direct)" "$direct_rps" "$direct_p99" "$direct_failed" "1.00"
printf '%-34s %11s %9s %7s %7s\n' "ppm start, 1 worker" "$one_rps" "$one_p99" "$one_failed" "$(ratio "$one_rps" "$direct_rps")"
printf '%-34s %11s %9s %7s %7s\n' "ppm start, 2 workers" "$two_rps" "$two_p99" "$two_failed" "$(ratio "$two_rps" "$direct_rps")"
