#!/usr/bin/env bash
# nginx → FastCGI → ppm against nginx → FastCGI → php-fpm: the Symfony
# fixture's hello route (tests/fixtures/symfony, GET /hello), the same
# number of PHP workers, the same nginx configuration (the shipped
# docker/nginx-fastcgi.conf with nginx's stock fastcgi_params), on
# loopback. Prints requests/s, p99 latency, CPU time per request of the
# whole stack (nginx, ppm or php-fpm, and their PHP processes; utime +
# stime from /proc) and the throughput ratio.
#
# php-fpm is a static pool of WORKERS children with opcache on, running the
# application's public/index.php (the kernel boots on every request); it
# gets `fastcgi_keep_conn off`, its better setting (with kept connections
# a child stays tied to one nginx worker's connection). ppm runs the
# httpKernel bridge (the kernel boots once per worker) with kept
# connections, as shipped.
#
#   bench/fastcgi.sh [SECONDS] [CONNECTIONS] [WORKERS]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
connections=${2:-16}
workers=${3:-2}
app=$(pwd)/tests/fixtures/symfony
php_fpm=${PHP_FPM:-/usr/sbin/php-fpm8.2}
nginx=${NGINX:-/usr/sbin/nginx}
[ -x "$php_fpm" ] || { echo "$php_fpm is missing: apt-get install php-fpm" >&2; exit 1; }
[ -x "$nginx" ] || { echo "$nginx is missing: apt-get install nginx" >&2; exit 1; }
source bench/lib.sh

warm_up() { wrk -t1 -c"$connections" -d2s "$1" >/dev/null; }

# nginx_for FASTCGI KEEP_CONN -> starts nginx with the shipped template, sets $port
nginx_for() {
  port=$(free_ports 1)
  local dir="$work/nginx-$port"
  mkdir -p "$dir"
  cp /etc/nginx/fastcgi_params "$dir/"
  PPM_FASTCGI=$1 PROXY_LISTEN=127.0.0.1:$port PUBLIC_DIR=$app/public \
    sh docker/render.sh docker/nginx-fastcgi.conf >"$dir/site.conf"
  [ "$2" = on ] || sed -i 's/fastcgi_keep_conn on;/fastcgi_keep_conn off;/' "$dir/site.conf"
  start_nginx "$dir" "$dir/site.conf"
}

# measure URL PID... -> "requests/s p99 failed cpu_us_per_request"
measure() {
  local url=$1; shift
  warm_up "$url"
  local before after rps p99 failed requests
  before=$(cpu_ticks "$@")
  read -r rps p99 failed < <(run_wrk "$url" "$duration" "$connections")
  after=$(cpu_ticks "$@")
  requests=$(python3 -c "print(round($rps * $duration))")
  echo "$rps $p99 $failed $(python3 -c "print(f'{($after - $before) * 1e6 / $(getconf CLK_TCK) / max($requests, 1):.0f}')")"
}

# --- nginx → ppm ----------------------------------------------------------------
fastcgi_port=$(free_ports 1)
start_ppm "$workers" "$app" --bridge=httpKernel --bootstrap=symfony --app-env=prod --max-requests=0 \
  --fastcgi-listen "127.0.0.1:$fastcgi_port"
ppm_pid=${pids[-1]}
nginx_for "127.0.0.1:$fastcgi_port" on
url="http://127.0.0.1:$port/hello"
wait_http "$url"
[ "$(curl -fsS "$url")" = "Hello from Symfony" ] || { echo "ppm: unexpected answer from $url" >&2; exit 1; }
read -r ppm_rps ppm_p99 ppm_failed ppm_cpu < <(measure "$url" "$ppm_pid" "$nginx_pid")
"$ppm" stop "$control" >/dev/null
kill -TERM "$nginx_pid"
wait "$ppm_pid" "$nginx_pid" 2>/dev/null || true

# --- nginx → php-fpm ------------------------------------------------------------
start_php_fpm "$workers"
nginx_for "unix:$work/php-fpm.sock" off
url="http://127.0.0.1:$port/hello"
wait_http "$url"
[ "$(curl -fsS "$url")" = "Hello from Symfony" ] || { echo "php-fpm: unexpected answer from $url" >&2; exit 1; }
read -r fpm_rps fpm_p99 fpm_failed fpm_cpu < <(measure "$url" "$fpm_pid" "$nginx_pid")

printf '%-44s %11s %9s %7s %12s %7s\n' \
  "Symfony /hello via nginx FastCGI, $workers workers, $connections conns, ${duration}s" \
  "requests/s" "p99 ms" "failed" "CPU us/req" "ratio"
printf '%-44s %11s %9s %7s %12s %7s\n' "nginx → php-fpm (pm=static, opcache)" \
  "$fpm_rps" "$fpm_p99" "$fpm_failed" "$fpm_cpu" "1.00"
printf '%-44s %11s %9s %7s %12s %7s\n' "nginx → ppm (--fastcgi-listen, httpKernel)" \
  "$ppm_rps" "$ppm_p99" "$ppm_failed" "$ppm_cpu" "$(ratio "$ppm_rps" "$fpm_rps")"
