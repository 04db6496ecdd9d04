# Shared by the bench scripts (sourced): which cores the servers and the load tool get, waiting
# for a server to answer, and stopping a server this script started, by its PID.
# shellcheck shell=bash

# Pins servers to core 0 and the load tool to core 1 (both to core 0 on one core), and raises
# the descriptor limit: 10k devices need 10k descriptors in each process. $1 names the script.
bench_cores() {
    SERVER_CORE=0
    LOAD_CORE=1
    if [ "$(nproc)" -lt 2 ]; then
        echo "$1: fewer than 2 cores; servers and load tool share core 0" >&2
        LOAD_CORE=0
    fi
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
}

# Waits up to 10 s for URL ($1) to answer 2xx; $2 names the script in the failure line.
wait_url() {
    for _ in $(seq 1 200); do
        if curl -sf -o /dev/null --max-time 1 "$1"; then return 0; fi
        sleep 0.05
    done
    echo "$2: $1 did not answer" >&2
    return 1
}

# Stops the child PID ($1): SIGTERM, up to 10 s to exit, then SIGKILL; reaps it.
stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 1 200); do kill -0 "$1" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# Appends one load tool result to $OUT with the 1-minute load average ($1) at its start, and
# shows it shortened; $2 is the tool's JSON line, $3 the line to record when it printed nothing.
bench_record() {
    local line=${2:-$3}
    line=$(echo "$line" | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d["loadavg_1min"]=float(sys.argv[1]); print(json.dumps(d))' "$1")
    echo "$line" >> "$OUT"
    echo "$line" | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d.pop("cdf_us",None); print(json.dumps(d)[:300])'
}
