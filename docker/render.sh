#!/bin/sh
# Renders one of the front-proxy configuration templates of this directory
# (haproxy.cfg, nginx-*.conf) for a given ppm layout, on standard output:
#
#     docker/render.sh docker/haproxy.cfg > /etc/haproxy/haproxy.cfg
#     PPM_WORKERS=4 PPM_HOSTS="10.0.0.2 10.0.0.3" docker/render.sh docker/haproxy.cfg
#
# Settings, from the environment (the defaults are ppm's own):
#   PPM_HOSTS             ppm hosts, separated by spaces     127.0.0.1
#   PPM_PORT              balancer port of each ppm          5501
#   PPM_WORKERS           worker slots of each ppm           8
#   PPM_WORKER_PORT       port of slot 0                     PPM_PORT + 1
#   PROXY_LISTEN          address the proxy listens on       0.0.0.0:8080
#   PROXY_STATS_LISTEN    haproxy statistics page            127.0.0.1:8404
#   PUBLIC_DIR            static files (nginx-static.conf)   /srv/app/public
#   PPM_FASTCGI           ppm's --fastcgi-listen address     127.0.0.1:9000
#
# Placeholders in the templates: {{BALANCER_PORT}}, {{LISTEN}},
# {{STATS_LISTEN}}, {{PUBLIC_DIR}} and {{FASTCGI}} are replaced where they stand. A line
# holding {{HOST}} or {{HOST_INDEX}} is repeated for every host, and a line
# holding {{SLOT}} or {{SLOT_PORT}} for every worker slot (for every host,
# then every slot). A placeholder left over is an error. Only sh and awk
# are needed, so this runs in the haproxy and nginx images as well.
set -eu

if [ "$#" -ne 1 ] || [ ! -r "$1" ]; then
    echo "usage: $0 TEMPLATE > CONFIG" >&2
    exit 2
fi

number() {
    case "$2" in
        '' | *[!0-9]*)
            echo "$0: $1 must be a number, not '$2'" >&2
            exit 2
            ;;
    esac
}

R_HOSTS=${PPM_HOSTS:-127.0.0.1}
R_PORT=${PPM_PORT:-5501}
number PPM_PORT "$R_PORT"
R_WORKERS=${PPM_WORKERS:-8}
number PPM_WORKERS "$R_WORKERS"
R_WORKER_PORT=${PPM_WORKER_PORT:-$((R_PORT + 1))}
number PPM_WORKER_PORT "$R_WORKER_PORT"
R_LISTEN=${PROXY_LISTEN:-0.0.0.0:8080}
R_STATS_LISTEN=${PROXY_STATS_LISTEN:-127.0.0.1:8404}
R_PUBLIC_DIR=${PUBLIC_DIR:-/srv/app/public}
R_FASTCGI=${PPM_FASTCGI:-127.0.0.1:9000}
export R_HOSTS R_PORT R_WORKERS R_WORKER_PORT R_LISTEN R_STATS_LISTEN R_PUBLIC_DIR R_FASTCGI

# ENVIRON rather than -v: awk would interpret backslashes in -v values.
exec awk '
function rep(s, from, to,    out, i) {
    out = ""
    while ((i = index(s, from)) > 0) {
        out = out substr(s, 1, i - 1) to
        s = substr(s, i + length(from))
    }
    return out s
}
BEGIN {
    hosts = split(ENVIRON["R_HOSTS"], host, " ")
    workers = ENVIRON["R_WORKERS"] + 0
    first = ENVIRON["R_WORKER_PORT"] + 0
    failed = 0
}
{
    line = $0
    line = rep(line, "{{BALANCER_PORT}}", ENVIRON["R_PORT"])
    line = rep(line, "{{LISTEN}}", ENVIRON["R_LISTEN"])
    line = rep(line, "{{STATS_LISTEN}}", ENVIRON["R_STATS_LISTEN"])
    line = rep(line, "{{PUBLIC_DIR}}", ENVIRON["R_PUBLIC_DIR"])
    line = rep(line, "{{FASTCGI}}", ENVIRON["R_FASTCGI"])
    per_host = index(line, "{{HOST}}") || index(line, "{{HOST_INDEX}}")
    per_slot = index(line, "{{SLOT}}") || index(line, "{{SLOT_PORT}}")
    for (h = 1; h <= (per_host ? hosts : 1); h++) {
        for (s = 0; s < (per_slot ? workers : 1); s++) {
            out = line
            if (per_host) {
                out = rep(out, "{{HOST_INDEX}}", h - 1)
                out = rep(out, "{{HOST}}", host[h])
            }
            if (per_slot) {
                out = rep(out, "{{SLOT_PORT}}", first + s)
                out = rep(out, "{{SLOT}}", s)
            }
            if (out ~ /\{\{[A-Z_]+\}\}/) {
                print FILENAME ":" FNR ": unknown placeholder in: " $0 > "/dev/stderr"
                failed = 1
            }
            print out
        }
    }
}
END { exit failed }
' "$1"
