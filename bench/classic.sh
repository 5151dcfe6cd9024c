#!/usr/bin/env bash
# A classic PHP script under --bridge=script on ppm's HTTP port against the
# same script under nginx → FastCGI → php-fpm: hello.php (echo, no
# framework), the same number of PHP workers, on loopback. Every request
# on both sides is a full PHP request (startup, script, shutdown) with
# opcache on. Prints requests/s, p99 latency, CPU time per request of the
# whole stack (ppm and its workers; nginx, php-fpm and its children) and
# the throughput ratio.
#
# php-fpm is a static pool of WORKERS children behind the shipped
# docker/nginx-classic.conf with nginx's stock fastcgi_params and
# `fastcgi_keep_conn off` (its better setting); ppm answers HTTP itself,
# which is the point: ppm takes nginx's place for such a site.
#
#   bench/classic.sh [SECONDS] [CONNECTIONS] [WORKERS]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
connections=${2:-16}
workers=${3:-2}
php_fpm=${PHP_FPM:-/usr/sbin/php-fpm8.2}
nginx=${NGINX:-/usr/sbin/nginx}
[ -x "$php_fpm" ] || { echo "$php_fpm is missing: apt-get install php-fpm" >&2; exit 1; }
[ -x "$nginx" ] || { echo "$nginx is missing: apt-get install nginx" >&2; exit 1; }
source bench/lib.sh

app=$work/site
mkdir -p "$app/www"
cat >"$app/www/hello.php" <<'PHP'
<?php
header('Content-Type: text/plain');
echo 'Hello from ', basename($_SERVER['SCRIPT_NAME']), "\n";
PHP
expected="Hello from hello.php"

warm_up() { wrk -t1 -c"$connections" -d2s "$1" >/dev/null; }

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

# --- ppm's HTTP port ------------------------------------------------------------
start_ppm "$workers" "$app" --bridge=script --document-root www \
  --max-requests=0 --no-logging
ppm_pid=${pids[-1]}
url="http://127.0.0.1:$balancer/hello.php"
[ "$(curl -fsS "$url")" = "$expected" ] || { echo "ppm: unexpected answer from $url" >&2; exit 1; }
read -r ppm_rps ppm_p99 ppm_failed ppm_cpu < <(measure "$url" "$ppm_pid")
"$ppm" stop "$control" >/dev/null
wait "$ppm_pid" 2>/dev/null || true

# --- nginx → php-fpm ------------------------------------------------------------
start_php_fpm "$workers"
port=$(free_ports 1)
dir="$work/nginx"
mkdir -p "$dir"
cp /etc/nginx/fastcgi_params "$dir/"
PPM_FASTCGI="unix:$work/php-fpm.sock" PROXY_LISTEN=127.0.0.1:$port PUBLIC_DIR=$app/www \
  sh docker/render.sh docker/nginx-classic.conf >"$dir/site.conf"
sed -i 's/fastcgi_keep_conn on;/fastcgi_keep_conn off;/' "$dir/site.conf"
start_nginx "$dir" "$dir/site.conf"
url="http://127.0.0.1:$port/hello.php"
wait_http "$url"
[ "$(curl -fsS "$url")" = "$expected" ] || { echo "php-fpm: unexpected answer from $url" >&2; exit 1; }
read -r fpm_rps fpm_p99 fpm_failed fpm_cpu < <(measure "$url" "$fpm_pid" "$nginx_pid")

printf '%-46s %11s %9s %7s %12s %7s\n' \
  "hello.php, $workers workers, $connections conns, ${duration}s" \
  "requests/s" "p99 ms" "failed" "CPU us/req" "ratio"
printf '%-46s %11s %9s %7s %12s %7s\n' "nginx → php-fpm (pm=static, opcache)" \
  "$fpm_rps" "$fpm_p99" "$fpm_failed" "$fpm_cpu" "1.00"
printf '%-46s %11s %9s %7s %12s %7s\n' "ppm HTTP port (--bridge=script, native)" \
  "$ppm_rps" "$ppm_p99" "$ppm_failed" "$ppm_cpu" "$(ratio "$ppm_rps" "$fpm_rps")"
