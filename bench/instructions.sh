#!/usr/bin/env bash
# The master's user-space instructions per proxied request, counted by
# callgrind: hello world on two workers, wrk with 8 connections, the
# count taken only while wrk runs. Unlike CPU time this does not move with
# the machine's load, so it compares two builds of the request path
# exactly (kernel time, the system calls themselves, is not in it: see
# front.sh for CPU time per request).
#
#   bench/instructions.sh [SECONDS] [ppm start options...]
#   PPM=path/to/other/ppm bench/instructions.sh   # another build
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-6}; shift || true
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; }
source bench/lib.sh
binary=$(readlink -f "${PPM:-$ppm}")
base=$(free_ports 4)
control=$base; balancer=$((base + 1))
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/callgrind.out" \
  "$binary" start examples/hello --bridge=callable --bootstrap=app.php --workers 2 \
  --control-port "$control" --port "$balancer" --max-requests=0 "$@" \
  >"$work/access.log" 2>"$work/ppm.log" &
pids+=($!)
grind=$!
for _ in $(seq 1 300); do curl -fsS -o /dev/null "http://127.0.0.1:$balancer/" 2>/dev/null && break; sleep 0.2; done
wrk -t1 -c8 -d2s "http://127.0.0.1:$balancer/" >/dev/null
callgrind_control -i on "$grind" >/dev/null
wrk -t1 -c8 -d"${duration}s" "http://127.0.0.1:$balancer/" >"$work/wrk.txt"
callgrind_control -i off "$grind" >/dev/null
callgrind_control -d "$grind" >/dev/null
sleep 1
requests=$(awk '/requests in/ { print $1 }' "$work/wrk.txt")
total=$(callgrind_annotate "$(ls -t "$work"/callgrind.out* | head -1)" 2>/dev/null \
  | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
"$binary" stop "$control" >/dev/null 2>&1 || true
printf '%-40s %10s %22s\n' "build" "requests" "instructions/request"
printf '%-40s %10s %22s\n' "$binary" "$requests" "$(( total / requests ))"
