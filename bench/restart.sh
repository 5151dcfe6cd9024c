#!/usr/bin/env bash
# Throughput during rolling restarts: wrk against the balancer while
# `ppm restart` runs back to back, compared with the same load without
# restarts. Prints failed requests and the throughput ratio.
#
#   bench/restart.sh [SECONDS] [CONNECTIONS] [WORKERS]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
connections=${2:-16}
workers=${3:-4}
app=examples/hello
source bench/lib.sh

start_ppm "$workers" "$app" --bridge=callable --bootstrap=app.php --max-requests=0
url="http://127.0.0.1:$balancer/"
read -r steady_rps steady_p99 steady_failed < <(run_wrk "$url" "$duration" "$connections")

restarts=0
(
  end=$((SECONDS + duration))
  while [ $SECONDS -lt $end ]; do "$ppm" restart "$control" >/dev/null || exit 1; done
) &
roller=$!
read -r roll_rps roll_p99 roll_failed < <(run_wrk "$url" "$duration" "$connections")
wait "$roller" || { echo "a ppm restart failed" >&2; exit 1; }
restarts=$(curl -fsS "http://127.0.0.1:$control/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["restart"]["id"])')
"$ppm" stop "$control" >/dev/null

printf '%-40s %11s %9s %7s %7s\n' "$workers workers, $connections connections, ${duration}s" "requests/s" "p99 ms" "failed" "ratio"
printf '%-40s %11s %9s %7s %7s\n' "steady" "$steady_rps" "$steady_p99" "$steady_failed" "1.00"
printf '%-40s %11s %9s %7s %7s\n' "during $restarts back-to-back restarts" "$roll_rps" "$roll_p99" "$roll_failed" "$(ratio "$roll_rps" "$steady_rps")"
