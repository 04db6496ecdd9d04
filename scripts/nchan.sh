#!/usr/bin/env bash
# nchan (Debian's nginx + libnginx-mod-nchan) as the comparison server for scripts/bench.sh.
#
#   scripts/nchan.sh start PORT   installs the packages if missing, writes a config into a temp
#                                 dir, starts nginx as its own process (one worker, 127.0.0.1 only)
#                                 and prints "MASTER_PID,WORKER_PID"
#   scripts/nchan.sh pids PORT    prints "MASTER_PID,WORKER_PID" of a running instance
#   scripts/nchan.sh stop PORT    stops that instance by its PID and removes its temp dir
#
# Publisher: POST /pub/{id}; websocket subscriber: /sub/{id}; /nchan_status: stub status.
# The system nginx service is never touched. Pin the server by starting this under taskset.
set -euo pipefail

MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so
usage() { echo "usage: $0 start|stop|pids PORT" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1 port=$2
if ! [[ $port =~ ^[0-9]+$ ]] || [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then usage; fi
dir="${TMPDIR:-/tmp}/wssed-nchan.$port"

install_nchan() {
    if command -v nginx >/dev/null 2>&1 && [ -e "$MODULE" ]; then
        return 0
    fi
    echo "nchan.sh: installing nginx and libnginx-mod-nchan" >&2
    # Keep the package scripts from starting the system service: this script runs its own.
    local policy_added=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        policy_added=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends nginx libnginx-mod-nchan >&2 \
        || apt-get install -y -qq --no-install-recommends nginx-light libnginx-mod-nchan >&2
    [ "$policy_added" = 1 ] && rm -f /usr/sbin/policy-rc.d
    [ -e "$MODULE" ] || { echo "nchan.sh: $MODULE missing after install" >&2; exit 1; }
}

pids() {
    local master worker
    master=$(cat "$dir/nginx.pid" 2>/dev/null) || return 1
    kill -0 "$master" 2>/dev/null || return 1
    worker=$(pgrep -P "$master" | head -n1) || return 1
    [ -n "$worker" ] || return 1
    echo "$master,$worker"
}

start() {
    install_nchan
    if pids >/dev/null 2>&1; then
        echo "nchan.sh: already running on port $port ($(pids))" >&2
        exit 1
    fi
    rm -rf "$dir"
    mkdir -p "$dir/tmp"
    # Files: the load tool holds up to 10k subscribers plus upstream connections.
    local nofile
    nofile=$(ulimit -Hn)
    [ "$nofile" = unlimited ] && nofile=65536
    [ "$nofile" -gt 65536 ] && nofile=65536
    cat > "$dir/nginx.conf" <<CONF
load_module $MODULE;
worker_processes 1;
worker_rlimit_nofile $nofile;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $((nofile - 64)); }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    # The load tool keeps its upstream connections for the whole run.
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    # Deliver to the subscribers present, store nothing: the same contract as wssed's push.
    nchan_message_buffer_length 0;
    server {
        listen 127.0.0.1:$port backlog=4096;
        location ~ ^/pub/(\w+)$ {
            nchan_publisher;
            nchan_channel_id \$1;
        }
        location ~ ^/sub/(\w+)$ {
            nchan_subscriber websocket;
            nchan_channel_id \$1;
        }
        location = /nchan_status {
            nchan_stub_status;
        }
    }
}
CONF
    nginx -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
    nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"

    for _ in $(seq 1 100); do
        if pids >/dev/null 2>&1 && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            pids
            return 0
        fi
        sleep 0.05
    done
    echo "nchan.sh: nginx did not come up; $dir/error.log:" >&2
    cat "$dir/error.log" >&2 || true
    exit 1
}

stop() {
    local master
    master=$(cat "$dir/nginx.pid" 2>/dev/null) || { echo "nchan.sh: not running on port $port" >&2; return 0; }
    if kill -0 "$master" 2>/dev/null; then
        kill -TERM "$master"
        for _ in $(seq 1 100); do
            kill -0 "$master" 2>/dev/null || break
            sleep 0.05
        done
        kill -0 "$master" 2>/dev/null && kill -KILL "$master"
    fi
    rm -rf "$dir"
}

case $cmd in
    start) start ;;
    stop) stop ;;
    pids) pids || { echo "nchan.sh: not running on port $port" >&2; exit 1; } ;;
    *) usage ;;
esac
