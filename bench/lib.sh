# Shared helpers of the bench scripts (sourced, not run).

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet
ppm=${PPM:-target/release/ppm}

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# free_ports N -> first of N consecutive free loopback ports
free_ports() {
  python3 - "$1" <<'PY'
import random, socket, sys
n = int(sys.argv[1])
while True:
    base = random.randint(20000, 60000 - n)
    held = []
    try:
        for p in range(base, base + n):
            s = socket.socket(); s.bind(("127.0.0.1", p)); held.append(s)
        print(base); break
    except OSError:
        pass
    finally:
        for s in held: s.close()
PY
}

wait_http() {
  for _ in $(seq 1 150); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "no answer from $1" >&2; exit 1
}

# start_ppm WORKERS APP [ppm start options...] -> sets $control and $balancer ports
start_ppm() {
  local workers=$1 app=$2; shift 2
  local base; base=$(free_ports $((workers + 2)))
  control=$base; balancer=$((base + 1))
  # The access log (on by default, like nginx's) goes to a file, as in production.
  "$ppm" start "$app" --workers "$workers" --control-port "$control" --port "$balancer" "$@" \
    >"$work/access-$control.log" 2>"$work/ppm-$control.log" &
  pids+=($!)
  for _ in $(seq 1 150); do
    ready=$(curl -fsS "http://127.0.0.1:$control/status" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["ready_workers"])' 2>/dev/null || echo 0)
    [ "$ready" = "$workers" ] && return 0
    sleep 0.1
  done
  echo "ppm did not come up; log:" >&2; cat "$work/ppm-$control.log" >&2; exit 1
}

# run_wrk URL SECONDS CONNECTIONS -> "requests_per_second p99_ms failed_requests"
run_wrk() {
  wrk -t2 -c"$3" -d"$2s" --latency "$1" > "$work/wrk.txt"
  python3 - "$work/wrk.txt" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
scale = {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
failed = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", text))
errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
if errors:
    failed += sum(int(x) for x in errors.groups())
print(f"{rps:.0f} {float(p99.group(1)) * scale:.2f} {failed}")
PY
}

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }

# cpu_ticks PID... -> clock ticks (utime + stime) used so far by the
# processes and all their descendants, living ones (children reaped
# meanwhile count in their parent's cutime/cstime, which is added too).
cpu_ticks() {
  python3 - "$@" <<'PY'
import os, sys
roots = {int(p) for p in sys.argv[1:]}
stats = {}
for name in os.listdir("/proc"):
    if name.isdigit():
        try:
            rest = open(f"/proc/{name}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(name)] = (int(rest[1]), sum(int(x) for x in rest[11:15]))
tree, todo = set(), list(roots)
while todo:
    pid = todo.pop()
    if pid in tree or pid not in stats:
        continue
    tree.add(pid)
    todo.extend(p for p, (ppid, _) in stats.items() if ppid == pid)
print(sum(stats[p][1] for p in tree))
PY
}

# self_ticks PID -> clock ticks (utime + stime) of that one process, all its
# threads, none of its children: what a balancer itself spends.
self_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# pss_mib PID -> proportional set size (MiB) of the process and all its
# descendants: shared pages (PHP's code, opcache's shared memory) are
# split among the processes that map them, so the sum is what they cost.
pss_mib() {
  python3 - "$1" <<'PY'
import os, sys
root = int(sys.argv[1])
parent = {}
for name in os.listdir("/proc"):
    if name.isdigit():
        try:
            parent[int(name)] = int(open(f"/proc/{name}/stat").read().rsplit(")", 1)[1].split()[1])
        except OSError:
            pass
tree, todo = set(), [root]
while todo:
    pid = todo.pop()
    if pid not in tree:
        tree.add(pid)
        todo.extend(p for p, pp in parent.items() if pp == pid)
total = 0
for pid in tree:
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    except OSError:
        pass
print(f"{total / 1024:.1f}")
PY
}

# start_php_fpm WORKERS -> php-fpm (master and a static pool of WORKERS
# children, opcache on, no recycling) on the socket $work/php-fpm.sock;
# sets $fpm_pid
start_php_fpm() {
  cat >"$work/php-fpm.conf" <<CONF
[global]
error_log = $work/php-fpm.log
daemonize = no

[bench]
listen = $work/php-fpm.sock
listen.mode = 0666
pm = static
pm.max_children = $1
pm.max_requests = 0
catch_workers_output = yes
php_admin_flag[opcache.enable] = on
CONF
  "${php_fpm:-/usr/sbin/php-fpm8.2}" -F -R -y "$work/php-fpm.conf" 2>"$work/php-fpm.out" &
  pids+=($!)
  fpm_pid=$!
}

# start_nginx DIR SITE -> nginx with its pid, logs and temporary files in
# DIR, its http block including the file SITE (server blocks); sets $nginx_pid
start_nginx() {
  local dir=$1 site=$2 user=""
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && user="user root;"
  cat >"$dir/nginx.conf" <<CONF
$user
worker_processes auto;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    include $site;
}
CONF
  "${nginx:-/usr/sbin/nginx}" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" 2>"$dir/nginx.out" &
  pids+=($!)
  nginx_pid=$!
}
