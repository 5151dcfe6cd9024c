#!/usr/bin/env bash
# Framework throughput: the Symfony (or, with FRAMEWORK=laravel, the
# Laravel) fixture's hello route (tests/fixtures/NAME, GET /hello) under
# ppm and under nginx + php-fpm, with the same number of PHP workers, on
# loopback. Prints requests/s, p99 latency, the ratio, and the memory of
# each side once loaded: the PSS of all ppm processes (master and workers)
# against that of php-fpm's pool (master and children).
#
# The reference stack is what most Symfony sites run: nginx in front of a
# static php-fpm pool of WORKERS children and the application's own
# public/index.php, which boots the kernel on every request (the prod
# container comes from the cache either way). ppm boots it once per worker.
#
#   [FRAMEWORK=laravel] bench/symfony.sh [SECONDS] [CONNECTIONS] [WORKERS]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
connections=${2:-16}
workers=${3:-2}
framework=${FRAMEWORK:-symfony}
case "$framework" in
  symfony) name=Symfony ;;
  laravel) name=Laravel ;;
  *) echo "FRAMEWORK must be symfony or laravel, not $framework" >&2; exit 2 ;;
esac
app=$(pwd)/tests/fixtures/$framework
php_fpm=${PHP_FPM:-/usr/sbin/php-fpm8.2}
nginx=${NGINX:-/usr/sbin/nginx}
[ -x "$php_fpm" ] || { echo "$php_fpm is missing: apt-get install php-fpm" >&2; exit 1; }
[ -x "$nginx" ] || { echo "$nginx is missing: apt-get install nginx" >&2; exit 1; }
source bench/lib.sh

warm_up() { wrk -t1 -c"$connections" -d2s "$1" >/dev/null; }

# --- ppm ----------------------------------------------------------------------
start_ppm "$workers" "$app" --bridge=httpKernel --bootstrap="$framework" --app-env=prod --max-requests=0
url="http://127.0.0.1:$balancer/hello"
[ "$(curl -fsS "$url")" = "Hello from $name" ] || { echo "ppm: unexpected answer from $url" >&2; exit 1; }
warm_up "$url"
read -r ppm_rps ppm_p99 ppm_failed < <(run_wrk "$url" "$duration" "$connections")
ppm_pss=$(pss_mib "${pids[-1]}")
"$ppm" stop "$control" >/dev/null
wait "${pids[-1]}" 2>/dev/null || true

# --- nginx + php-fpm ----------------------------------------------------------
port=$(free_ports 1)
mkdir -p "$work/nginx"
cat >"$work/site.conf" <<EOF
server {
    listen 127.0.0.1:$port;
    root $app/public;
    location / { try_files \$uri /index.php\$is_args\$args; }
    location = /index.php {
        internal;
        # no upstream keepalive: with fastcgi_keep_conn a php-fpm child
        # stays tied to one nginx worker's connection and requests of the
        # other nginx workers wait behind it (seconds of p99 latency)
        fastcgi_pass unix:$work/php-fpm.sock;
        # upstream nginx's fastcgi_params (Debian's rewrites HTTP_HOST)
        fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
        fastcgi_param QUERY_STRING \$query_string;
        fastcgi_param REQUEST_METHOD \$request_method;
        fastcgi_param CONTENT_TYPE \$content_type;
        fastcgi_param CONTENT_LENGTH \$content_length;
        fastcgi_param SCRIPT_NAME \$fastcgi_script_name;
        fastcgi_param REQUEST_URI \$request_uri;
        fastcgi_param DOCUMENT_URI \$document_uri;
        fastcgi_param DOCUMENT_ROOT \$document_root;
        fastcgi_param SERVER_PROTOCOL \$server_protocol;
        fastcgi_param REQUEST_SCHEME \$scheme;
        fastcgi_param HTTPS \$https if_not_empty;
        fastcgi_param GATEWAY_INTERFACE CGI/1.1;
        fastcgi_param SERVER_SOFTWARE nginx;
        fastcgi_param REMOTE_ADDR \$remote_addr;
        fastcgi_param REMOTE_PORT \$remote_port;
        fastcgi_param SERVER_ADDR \$server_addr;
        fastcgi_param SERVER_PORT \$server_port;
        fastcgi_param SERVER_NAME \$server_name;
        fastcgi_param REDIRECT_STATUS 200;
    }
}
EOF
start_php_fpm "$workers"
start_nginx "$work/nginx" "$work/site.conf"
url="http://127.0.0.1:$port/hello"
wait_http "$url"
[ "$(curl -fsS "$url")" = "Hello from $name" ] || { echo "php-fpm: unexpected answer from $url" >&2; exit 1; }
warm_up "$url"
read -r fpm_rps fpm_p99 fpm_failed < <(run_wrk "$url" "$duration" "$connections")
fpm_pss=$(pss_mib "$fpm_pid")

printf '%-40s %11s %9s %7s %7s %9s\n' \
  "$name /hello, $workers PHP workers, $connections conns, ${duration}s" "requests/s" "p99 ms" "failed" "ratio" "PSS MiB"
printf '%-40s %11s %9s %7s %7s %9s\n' "nginx + php-fpm (pm=static)" "$fpm_rps" "$fpm_p99" "$fpm_failed" "1.00" "$fpm_pss"
printf '%-40s %11s %9s %7s %7s %9s\n' "ppm start (httpKernel, $framework)" "$ppm_rps" "$ppm_p99" "$ppm_failed" \
  "$(ratio "$ppm_rps" "$fpm_rps")" "$ppm_pss"
