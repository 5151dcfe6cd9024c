#!/usr/bin/env bash
# Hello-world throughput: ppm (1 and 2 workers, through the balancer)
# against one PHP worker reached directly (`ppm worker --listen`, no
# master in between). Prints requests/s, p99 latency and the ratios.
#
#   bench/hello.sh [DURATION_SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
connections=${2:-16}
app=examples/hello

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet
ppm=target/release/ppm

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
  for _ in $(seq 1 150); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "no answer from $1" >&2; exit 1
}
# run_wrk URL -> "requests_per_second p99_ms"
run_wrk() {
  curl -fsS -o /dev/null "$1"
  wrk -t2 -c"$connections" -d"${duration}s" --latency "$1" > "$work/wrk.txt"
  local rps p99
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$work/wrk.txt")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; print v}' "$work/wrk.txt")
  local errors
  errors=$(awk '/Non-2xx|Socket errors/ {print}' "$work/wrk.txt")
  [ -z "$errors" ] || echo "  wrk reported: $errors" >&2
  echo "$rps $p99"
}

port=$(free_port)
"$ppm" worker "$app" --bridge=callable --bootstrap=app.php --listen "127.0.0.1:$port" 2>"$work/worker.log" &
pids+=($!)
wait_http "http://127.0.0.1:$port/"
read -r direct_rps direct_p99 < <(run_wrk "http://127.0.0.1:$port/")
kill -TERM "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

through_ppm() {
  local workers=$1 base
  base=$(python3 -c 'import socket,random
while True:
    b=random.randint(20000,60000); ok=True; ss=[]
    for p in range(b,b+'"$workers"'+2):
        s=socket.socket()
        try: s.bind(("127.0.0.1",p)); ss.append(s)
        except OSError: ok=False; break
    if ok: print(b); break')
  "$ppm" start "$app" --bridge=callable --bootstrap=app.php --workers "$workers" \
    --control-port "$base" --port "$((base + 1))" 2>"$work/ppm$workers.log" &
  pids+=($!)
  for _ in $(seq 1 150); do
    ready=$(curl -fsS "http://127.0.0.1:$base/status" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["ready_workers"])' 2>/dev/null || echo 0)
    [ "$ready" = "$workers" ] && break; sleep 0.1
  done
  run_wrk "http://127.0.0.1:$((base + 1))/"
  "$ppm" stop "$base" >/dev/null
}
read -r one_rps one_p99 < <(through_ppm 1)
read -r two_rps two_p99 < <(through_ppm 2)

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
printf '%-34s %12s %10s %8s\n' "setup ($connections connections, ${duration}s)" "requests/s" "p99 ms" "ratio"
printf '%-34s %12s %10s %8s\n' "ppm worker --listen (direct)" "$direct_rps" "$direct_p99" "1.00"
printf '%-34s %12s %10s %8s\n' "ppm start, 1 worker, balancer" "$one_rps" "$one_p99" "$(ratio "$one_rps" "$direct_rps")"
printf '%-34s %12s %10s %8s\n' "ppm start, 2 workers, balancer" "$two_rps" "$two_p99" "$(ratio "$two_rps" "$direct_rps")"
