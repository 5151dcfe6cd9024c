#!/bin/sh
# Entrypoint of the ppm image: builds the `ppm start` command line from
# PPM_* environment variables, then execs ppm.
#
#     docker run IMAGE                         ppm start with the PPM_* settings
#     docker run IMAGE --max-requests=500      the same, plus these options
#     docker run IMAGE sh                      runs that command instead
#
# exec, not a child process: ppm itself then receives SIGTERM (docker stop,
# Kubernetes) and SIGHUP (rolling restart) and its exit status is the
# container's, with no shell in between that could swallow a signal. In
# the image, tini runs as PID 1 above it, forwarding signals and reaping
# orphaned processes (which ppm, reaping only its own workers, would not).
#
# Every variable is optional; an empty one is the same as an unset one,
# and ppm's own default applies. Do not pass an option both as a variable
# and as an argument: ppm refuses an option given twice.
#
#   PPM_APP_DIR (default /srv/app)    the application directory
#   PPM_WORKERS PPM_HOST PPM_PORT PPM_WORKER_PORT PPM_CONTROL_HOST
#   PPM_CONTROL_PORT PPM_BRIDGE PPM_BOOTSTRAP PPM_APP_ENV
#   PPM_MAX_REQUESTS PPM_TTL PPM_MEMORY_LIMIT PPM_RECYCLE_JITTER
#   PPM_MAX_EXECUTION_TIME PPM_SLOW_REQUEST_TIME PPM_SHUTDOWN_TIMEOUT
#   PPM_BOOTSTRAP_TIMEOUT PPM_QUEUE_TIMEOUT PPM_MAX_QUEUE PPM_MAX_BODY_SIZE
#   PPM_MAX_SURGE PPM_HEALTH_PATH PPM_CONFIG
#                                     --workers=… and so on
#   PPM_DEBUG, PPM_CONTROL_PUBLIC_READ   1/true/yes: --debug, --control-public-read
#   PPM_PHP_INI                       KEY=VALUE lines, one --php-ini each
#
# PPM_CONTROL_TOKEN and PPM_LOG are read by ppm itself (the token is never
# put on the command line, where ps would show it).
set -eu

if [ "$#" -gt 0 ]; then
    case "$1" in
        -*) ;;
        *) exec "$@" ;;
    esac
fi

# The caller's options are kept in front for now and moved behind ours at
# the end (POSIX sh has no arrays).
given=$#
set -- "$@" start "${PPM_APP_DIR:-/srv/app}"

for pair in \
    WORKERS:workers HOST:host PORT:port WORKER_PORT:worker-port \
    CONTROL_HOST:control-host CONTROL_PORT:control-port \
    BRIDGE:bridge BOOTSTRAP:bootstrap APP_ENV:app-env \
    MAX_REQUESTS:max-requests TTL:ttl MEMORY_LIMIT:memory-limit \
    RECYCLE_JITTER:recycle-jitter MAX_EXECUTION_TIME:max-execution-time \
    SLOW_REQUEST_TIME:slow-request-time SHUTDOWN_TIMEOUT:shutdown-timeout \
    BOOTSTRAP_TIMEOUT:bootstrap-timeout QUEUE_TIMEOUT:queue-timeout \
    MAX_QUEUE:max-queue MAX_BODY_SIZE:max-body-size MAX_SURGE:max-surge \
    HEALTH_PATH:health-path CONFIG:config; do
    # The variable names are the literals above; values are never evaluated.
    eval "value=\${PPM_${pair%%:*}:-}"
    [ -z "$value" ] || set -- "$@" "--${pair#*:}=$value"
done

for pair in DEBUG:debug CONTROL_PUBLIC_READ:control-public-read; do
    eval "value=\${PPM_${pair%%:*}:-}"
    case "$value" in
        1 | true | yes | on) set -- "$@" "--${pair#*:}" ;;
        '' | 0 | false | no | off) ;;
        *)
            echo "entrypoint: PPM_${pair%%:*} must be 1 or 0, not '$value'" >&2
            exit 2
            ;;
    esac
done

while IFS= read -r setting; do
    [ -z "$setting" ] || set -- "$@" "--php-ini=$setting"
done <<SETTINGS
${PPM_PHP_INI:-}
SETTINGS

while [ "$given" -gt 0 ]; do
    set -- "$@" "$1"
    shift
    given=$((given - 1))
done

exec ppm "$@"
