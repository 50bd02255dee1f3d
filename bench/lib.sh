# Shared helpers for bench/*.sh (sourced, not run).
# shellcheck shell=bash

# A free loopback port.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PORT: until something listens on 127.0.0.1:PORT (at most 30 s).
wait_port() {
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1 after 30 s" >&2
    return 1
}

# timed LOG CMD...: runs CMD under /usr/bin/time -v, stdout+stderr to LOG;
# afterwards $WALL (s), $RSS_MB (peak RSS) and $CPU_S (user + system
# CPU-seconds, all threads) describe the run.
timed() {
    local log="$1"; shift
    /usr/bin/time -v "$@" >"$log" 2>&1 || { echo "failed: $* (log: $log)" >&2; tail -20 "$log" >&2; return 1; }
    WALL="$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s}' "$log")"
    RSS_MB="$(awk -F': ' '/Maximum resident set size/ {printf "%.1f", $2 / 1024}' "$log")"
    CPU_S="$(awk -F': ' '/(User|System) time \(seconds\)/ {s += $2} END {printf "%.2f", s}' "$log")"
}

# ratio A B [DIGITS]: A / B
ratio() { python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(f'{a / b:.${3:-2}f}' if b else 'n/a')" "$1" "$2"; }

# md LINE: append a line to the results file and echo it.
md() { printf '%s\n' "$*" | tee -a "$RESULTS"; }
