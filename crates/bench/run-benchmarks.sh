#!/usr/bin/env bash
# Measures nobounce against the protocol floor (noop-milter) and itself under
# several configurations; see docs/PERFORMANCE.md for what each item means.
#
#   crates/bench/run-benchmarks.sh            # everything, ~5-10 minutes
#   QUICK=1 crates/bench/run-benchmarks.sh    # tiny sizes, checks the script
#   ITEMS="a e" crates/bench/run-benchmarks.sh
#
# Loopback only: every server (bench-dns, noop-milter, nobounce, redis-server)
# listens on 127.0.0.1 and is stopped when the script exits. Raw results
# (loadgen --json reports plus one .meta.json per run with CPU time and DNS
# query counts) go to target/bench-results/<timestamp>/, with summary.md.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$ROOT/target/bench-results/$STAMP}
ITEMS=${ITEMS:-"a b c d e f"}
QUICK=${QUICK:-0}

# Sizes (QUICK=1 shrinks them to check the script in seconds).
if [[ $QUICK == 1 ]]; then
    A_TXNS=2000 B_TXNS=500 C_FILL=20000 C_MORE=5000 C_CAP=10000 D_CONNS=100 D_SECS=2 E_TXNS=500 F_TXNS=1000
else
    A_TXNS=50000 B_TXNS=10000 C_FILL=1050000 C_MORE=200000 C_CAP=1000000 D_CONNS=1000 D_SECS=10 E_TXNS=5000 F_TXNS=20000
fi
DNS_DELAY_MS=${DNS_DELAY_MS:-5}

# The workload of item a, reused by b and f (f adds unknown recipients).
# Two headers per message, as in the runs docs/PERFORMANCE.md reports from
# this script (milter-loadgen's default is now 12, a Postfix-like message;
# issue 8's side-by-side comparison is crates/bench/issue8-bench.sh).
MIX=(--concurrency 8 --messages-per-connection 10 --recipients 2 --domains 1000
    --zipf 1.1 --client-ips 50 --macros --headers 2)

mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/nobounce-bench.XXXXXX)
PIDS=()

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        stop_pid "$pid"
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Builds first, then runs copies, so that a rebuild by someone else in the
# same tree during the run cannot swap a binary under the measurement.
log "building (release)"
(cd "$ROOT" && cargo build --release --quiet -p nobounce -p nobounce-bench)
BIN=$WORK/bin
mkdir -p "$BIN"
for b in nobounce milter-loadgen noop-milter bench-dns; do
    cp "$ROOT/target/release/$b" "$BIN/"
done

# 1000 held connections need about as many descriptors on each side.
ulimit -n "$(ulimit -Hn)"

{
    echo "date: $STAMP"
    echo "nproc: $(nproc)"
    echo "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
    echo "kernel: $(uname -sr)"
    echo "memory: $(sed -n 's/^MemTotal:[[:space:]]*//p' /proc/meminfo)"
    echo "rustc: $(rustc --version)"
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "redis: $(redis-server --version 2>/dev/null | head -1 || echo none)"
    echo "ulimit -n: $(ulimit -n)"
    echo "quick: $QUICK"
} >"$OUT/machine.txt"

free_port() {
    local p
    for _ in $(seq 100); do
        p=$((20000 + RANDOM % 40000))
        if ! ss -Htan "sport = :$p" | grep -q . && ! ss -Huan "sport = :$p" | grep -q .; then
            echo "$p"
            return 0
        fi
    done
    echo "no free port" >&2
    return 1
}

wait_listen() { # port pid
    for _ in $(seq 100); do
        ss -Hltn "sport = :$1" | grep -q . && return 0
        kill -0 "$2" 2>/dev/null || { log "process $2 died"; return 1; }
        sleep 0.1
    done
    log "nothing listens on port $1"
    return 1
}

cpu_secs() { # pid -> user+system CPU seconds so far
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}

vm_kb() { # pid field (VmRSS, VmHWM)
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

# --- bench-dns ---------------------------------------------------------------

DNS_PID="" DNS_OUT="" DNS_ADDR=""
start_dns() { # name [bench-dns args...]
    local name=$1
    shift
    DNS_OUT=$WORK/$name.out
    "$BIN/bench-dns" "$@" >"$DNS_OUT" 2>"$WORK/$name.err" &
    DNS_PID=$!
    PIDS+=("$DNS_PID")
    for _ in $(seq 100); do
        DNS_ADDR=$(sed -n 's/^bench-dns listening on //p' "$DNS_OUT")
        [[ -n $DNS_ADDR ]] && break
        sleep 0.05
    done
    [[ -n $DNS_ADDR ]] || { log "bench-dns did not start"; cat "$WORK/$name.err" >&2; exit 1; }
    log "bench-dns $* on $DNS_ADDR"
}

dns_queries() { # -> queries the current bench-dns received so far
    local before after
    before=$(grep -c queries "$DNS_OUT" || true)
    kill -USR1 "$DNS_PID"
    for _ in $(seq 100); do
        after=$(grep -c queries "$DNS_OUT" || true)
        [[ $after -gt $before ]] && break
        sleep 0.02
    done
    grep queries "$DNS_OUT" | tail -1 | jq .queries
}

# --- milters -----------------------------------------------------------------

# nobounce configuration from variables: LOG_LEVEL, MAX_CONN, DNS_CACHE,
# SPF_CACHE, SPF_HEADERS (TOML list), STORE, REDIS_PORT, RCPT_MAP (path: enables the map_file backend),
# DICT_THRESHOLD.
nb_config() { # file port
    # nobounce's default headers (Received-SPF) unless SPF_HEADERS says.
    local headers=''
    [[ -n ${SPF_HEADERS:-} ]] && headers="headers = $SPF_HEADERS"
    cat >"$1" <<EOF
socket = "inet:127.0.0.1:$2"
[log]
level = "${LOG_LEVEL:-info}"
[milter]
max_connections = ${MAX_CONN:-1000}
[dns]
nameservers = ["$DNS_ADDR"]
cache_size = ${DNS_CACHE:-4096}
[spf]
trusted_networks = []
cache_size = ${SPF_CACHE:-100000}
$headers
[dictionary]
threshold = ${DICT_THRESHOLD:-10}
window_secs = 600
[store]
backend = "${STORE:-memory}"
control_socket = ""
[store.redis]
url = "redis://127.0.0.1:${REDIS_PORT:-6379}"
prefix = "nbbench:"
EOF
    if [[ -n ${RCPT_MAP:-} ]]; then
        cat >>"$1" <<EOF
[recipients]
default_chain = ["users"]
[recipients.backends.users]
type = "map_file"
path = "$RCPT_MAP"
EOF
    fi
}

MILTER_PID="" MILTER_PORT=""
start_nobounce() { # name (config from the variables of nb_config)
    local name=$1
    MILTER_PORT=$(free_port)
    nb_config "$OUT/$name.toml" "$MILTER_PORT"
    "$BIN/nobounce" run --config "$OUT/$name.toml" >"$WORK/$name.out" 2>"$WORK/$name.log" &
    MILTER_PID=$!
    PIDS+=("$MILTER_PID")
    wait_listen "$MILTER_PORT" "$MILTER_PID" || { cat "$WORK/$name.log" >&2; exit 1; }
    log "nobounce ($name) pid $MILTER_PID on 127.0.0.1:$MILTER_PORT, RSS $(vm_kb "$MILTER_PID" VmRSS) kB"
}

start_noop() { # [noop-milter args...]
    MILTER_PORT=$(free_port)
    "$BIN/noop-milter" --listen "127.0.0.1:$MILTER_PORT" "$@" >"$WORK/noop-$MILTER_PORT.out" 2>&1 &
    MILTER_PID=$!
    PIDS+=("$MILTER_PID")
    wait_listen "$MILTER_PORT" "$MILTER_PID"
    log "noop-milter $* pid $MILTER_PID on 127.0.0.1:$MILTER_PORT"
}

stop_milter() {
    stop_pid "$MILTER_PID"
}

# One loadgen run against the current milter: NAME.json is loadgen's report,
# NAME.meta.json adds the CPU seconds of the milter and of loadgen during the
# run and the DNS queries bench-dns received.
load() { # name [loadgen args...]
    local name=$1
    shift
    local c0 c1 q0 q1 rc=0
    c0=$(cpu_secs "$MILTER_PID")
    q0=$(dns_queries)
    /usr/bin/time -o "$WORK/$name.time" -f '%e %U %S' \
        timeout 900 "$BIN/milter-loadgen" --milter "inet:127.0.0.1:$MILTER_PORT" --json "$@" \
        >"$OUT/$name.json" || rc=$?
    c1=$(cpu_secs "$MILTER_PID")
    q1=$(dns_queries)
    read -r _ lu ls <"$WORK/$name.time"
    jq -n --arg name "$name" --argjson rc "$rc" --arg args "$*" \
        --argjson mc "$(echo "$c1 - $c0" | bc)" --argjson lc "$(echo "$lu + $ls" | bc)" \
        --argjson q "$((q1 - q0))" --argjson rss "$(vm_kb "$MILTER_PID" VmRSS)" \
        --argjson hwm "$(vm_kb "$MILTER_PID" VmHWM)" \
        '{name: $name, loadgen_args: $args, loadgen_exit: $rc, milter_cpu_secs: $mc,
          loadgen_cpu_secs: $lc, dns_queries: $q, milter_rss_kb: $rss, milter_hwm_kb: $hwm}' \
        >"$OUT/$name.meta.json"
    jq -r --arg n "$name" '"\($n): \(.completed)/\(.transactions) ok, \(.transactions_per_sec | floor) tx/s, p50 \(.latency.p50_us | floor) us, p99 \(.latency.p99_us | floor) us, errors \(.errors)"' \
        "$OUT/$name.json" >&2
    [[ $rc == 0 || $rc == 1 ]] || { log "loadgen $name failed ($rc)"; exit 1; }
}

# --- the items ---------------------------------------------------------------

want() { [[ " $ITEMS " == *" $1 "* ]]; }

start_dns dns --domains 1000 --ttl 3600

if want a; then
    log "a: floor (noop-milter) vs nobounce, warm cache, ${A_TXNS} transactions"
    # Three milters up at once, measured in turn (twice), so that drift of
    # the machine hits all of them alike: the plain floor, the floor that
    # also inserts one header at end of message (nobounce's protocol work
    # with its default Received-SPF), and nobounce with its defaults. Then
    # nobounce with both SPF headers against the floor inserting two,
    # without headers, and with less logging.
    start_noop
    noop_pid=$MILTER_PID noop_port=$MILTER_PORT
    start_noop --insert-headers 1
    noop1_pid=$MILTER_PID noop1_port=$MILTER_PORT
    start_nobounce a-nobounce
    nb_pid=$MILTER_PID nb_port=$MILTER_PORT
    load a-nobounce-pass0 "${MIX[@]}" --transactions "$A_TXNS" # fills the caches
    MILTER_PID=$noop_pid MILTER_PORT=$noop_port
    load a-noop-warmup "${MIX[@]}" --transactions 5000
    MILTER_PID=$noop1_pid MILTER_PORT=$noop1_port
    load a-noop1h-warmup "${MIX[@]}" --transactions 5000
    for round in 1 2; do
        MILTER_PID=$noop_pid MILTER_PORT=$noop_port
        load "a-noop-$round" "${MIX[@]}" --transactions "$A_TXNS"
        MILTER_PID=$noop1_pid MILTER_PORT=$noop1_port
        load "a-noop1h-$round" "${MIX[@]}" --transactions "$A_TXNS"
        MILTER_PID=$nb_pid MILTER_PORT=$nb_port
        load "a-nobounce-$round" "${MIX[@]}" --transactions "$A_TXNS"
    done
    stop_pid "$noop_pid"
    stop_pid "$noop1_pid"
    stop_pid "$nb_pid"
    start_noop --insert-headers 2
    noop2_pid=$MILTER_PID noop2_port=$MILTER_PORT
    SPF_HEADERS='["Received-SPF", "Authentication-Results"]' start_nobounce a-nobounce-2h
    nb2_pid=$MILTER_PID nb2_port=$MILTER_PORT
    load a-nobounce-2h-pass0 "${MIX[@]}" --transactions "$A_TXNS"
    MILTER_PID=$noop2_pid MILTER_PORT=$noop2_port
    load a-noop2h "${MIX[@]}" --transactions "$A_TXNS"
    MILTER_PID=$nb2_pid MILTER_PORT=$nb2_port
    load a-nobounce-2h "${MIX[@]}" --transactions "$A_TXNS"
    stop_pid "$noop2_pid"
    stop_pid "$nb2_pid"
    SPF_HEADERS="[]" start_nobounce a-nobounce-noheaders
    load a-nobounce-noheaders-pass0 "${MIX[@]}" --transactions "$A_TXNS"
    load a-nobounce-noheaders "${MIX[@]}" --transactions "$A_TXNS"
    stop_milter
    LOG_LEVEL=warn start_nobounce a-nobounce-warnlog
    load a-nobounce-warnlog-pass0 "${MIX[@]}" --transactions "$A_TXNS"
    load a-nobounce-warnlog "${MIX[@]}" --transactions "$A_TXNS"
    stop_milter
fi

if want e; then
    log "e: one connection, ${E_TXNS} transactions with headers inserted"
    ONE=(--concurrency 1 --transactions "$E_TXNS" --messages-per-connection "$E_TXNS"
        --recipients 1 --domains 1000 --zipf 1.1 --client-ips 1 --macros --headers 2)
    start_noop
    load e-noop "${ONE[@]}"
    stop_milter
    start_noop --insert-headers 2
    load e-noop2h "${ONE[@]}"
    stop_milter
    # The same without TCP_NODELAY on the milter's side (nobounce always
    # sets it): the second header waits for the ACK of the first, which the
    # MTA's side delays (~40 ms). Few transactions: each takes that long.
    start_noop --insert-headers 2 --no-nodelay
    NAGLE=(--concurrency 1 --transactions $((E_TXNS / 50)) --messages-per-connection $((E_TXNS / 50))
        --recipients 1 --domains 1000 --zipf 1.1 --client-ips 1 --macros --headers 2)
    load e-noop2h-nagle "${NAGLE[@]}"
    stop_milter
    start_nobounce e-nobounce
    load e-nobounce-pass0 "${ONE[@]}"
    load e-nobounce "${ONE[@]}"
    stop_milter
fi

if want d; then
    log "d: ${D_CONNS} concurrent connections held ${D_SECS} s"
    MAX_CONN=$((D_CONNS + 100)) start_nobounce d-nobounce
    rss0=$(vm_kb "$MILTER_PID" VmRSS)
    "$BIN/milter-loadgen" --milter "inet:127.0.0.1:$MILTER_PORT" --json --hold "$D_CONNS" \
        --hold-secs "$D_SECS" --concurrency 64 --macros --headers 0 >"$OUT/d-hold.json" &
    hold_pid=$!
    PIDS+=("$hold_pid")
    # Sample once every connection is up (or half-way through the hold).
    established=0
    for _ in $(seq $((D_SECS * 5 / 2 + 10))); do
        sleep 0.2
        established=$(ss -Htn state established "( sport = :$MILTER_PORT )" | wc -l)
        [[ $established -ge $D_CONNS ]] && break
    done
    rss_held=$(vm_kb "$MILTER_PID" VmRSS)
    rc=0
    wait "$hold_pid" || rc=$?
    jq -n --argjson est "$established" --argjson rss0 "$rss0" --argjson rss "$rss_held" \
        --argjson hwm "$(vm_kb "$MILTER_PID" VmHWM)" --argjson rc "$rc" \
        '{established_during_hold: $est, milter_rss_kb_before: $rss0,
          milter_rss_kb_during_hold: $rss, milter_hwm_kb: $hwm, loadgen_exit: $rc}' \
        >"$OUT/d-hold.meta.json"
    jq -r '"hold: \(.established)/\(.attempted) established, open errors \(.open_errors), after hold \(.after_hold_statuses) errors \(.after_hold_errors)"' \
        "$OUT/d-hold.json" >&2
    stop_milter
fi

if want f; then
    log "f: memory vs Redis store, ${F_TXNS} transactions, half the recipients unknown"
    RCPT=$WORK/recipients
    for u in $(seq 0 49); do echo "user$u@rcpt.bench.test"; done >"$RCPT"
    REDIS_PORT=$(free_port)
    mkdir -p "$WORK/redis"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$WORK/redis" >"$WORK/redis.log" 2>&1 &
    redis_pid=$!
    PIDS+=("$redis_pid")
    wait_listen "$REDIS_PORT" "$redis_pid"
    log "redis-server pid $redis_pid on 127.0.0.1:$REDIS_PORT"
    FMIX=("${MIX[@]}" --rcpt-users 100 --transactions "$F_TXNS")
    for store in memory redis; do
        RCPT_MAP=$RCPT DICT_THRESHOLD=1000 STORE=$store REDIS_PORT=$REDIS_PORT \
            start_nobounce "f-$store"
        redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
        load "f-$store-pass0" "${FMIX[@]}"
        load "f-$store" "${FMIX[@]}"
        redis-cli -p "$REDIS_PORT" info commandstats >"$OUT/f-$store.redis-commandstats.txt"
        redis-cli -p "$REDIS_PORT" dbsize >"$OUT/f-$store.redis-dbsize.txt"
        stop_milter
        grep -c "banned\|ban " "$WORK/f-$store.log" >"$OUT/f-$store.ban-lines.txt" || true
    done
    stop_pid "$redis_pid"
fi

if want b; then
    log "b: cold vs warm caches, DNS answers delayed ${DNS_DELAY_MS} ms, ${B_TXNS} transactions"
    stop_pid "$DNS_PID"
    start_dns dns-slow --domains 1000 --ttl 3600 --delay-ms "$DNS_DELAY_MS"
    BMIX=("${MIX[@]}" --transactions "$B_TXNS")
    SPF_CACHE=0 DNS_CACHE=0 start_nobounce b-cold
    load b-cold "${BMIX[@]}"
    stop_milter
    SPF_CACHE=0 start_nobounce b-dnscache
    load b-dnscache-pass0 "${BMIX[@]}"
    load b-dnscache "${BMIX[@]}"
    stop_milter
    start_nobounce b-warm
    load b-warm-pass0 "${BMIX[@]}"
    load b-warm "${BMIX[@]}"
    stop_milter
    stop_pid "$DNS_PID"
    start_dns dns --domains 1000 --ttl 3600
fi

if want c; then
    log "c: RSS with ${C_CAP} SPF cache entries (${C_FILL} transactions with distinct keys)"
    SPF_CACHE=$C_CAP LOG_LEVEL=warn start_nobounce c-nobounce
    rss_start=$(vm_kb "$MILTER_PID" VmRSS)
    FILL=(--concurrency 8 --messages-per-connection 10 --recipients 1 --domains 1000 --zipf 0
        --client-ips 131832 --macros --headers 0)
    load c-base "${FILL[@]}" --transactions 2000 --seed 1000
    load c-fill "${FILL[@]}" --transactions "$C_FILL" --seed 1001
    load c-more "${FILL[@]}" --transactions "$C_MORE" --seed 1002
    jq -n --argjson start "$rss_start" --argjson cap "$C_CAP" \
        --slurpfile base "$OUT/c-base.meta.json" --slurpfile fill "$OUT/c-fill.meta.json" \
        --slurpfile more "$OUT/c-more.meta.json" \
        '{cache_size: $cap, rss_kb_at_start: $start,
          rss_kb_base: $base[0].milter_rss_kb, rss_kb_full: $fill[0].milter_rss_kb,
          hwm_kb_full: $fill[0].milter_hwm_kb, rss_kb_after_more: $more[0].milter_rss_kb,
          hwm_kb_after_more: $more[0].milter_hwm_kb,
          bytes_per_entry_rss: (($fill[0].milter_rss_kb - $base[0].milter_rss_kb) * 1024 / $cap),
          bytes_per_entry_hwm: (($more[0].milter_hwm_kb - $base[0].milter_rss_kb) * 1024 / $cap)}' \
        >"$OUT/c-rss.json"
    jq -c . "$OUT/c-rss.json" >&2
    stop_milter
fi

# --- summary -----------------------------------------------------------------

summary() {
    local r
    echo "# nobounce benchmark $STAMP"
    echo
    sed 's/^/    /' "$OUT/machine.txt"
    echo
    echo "| run | completed | tx/s | p50 ms | p99 ms | milter CPU µs/tx | loadgen CPU µs/tx | DNS queries | statuses |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    for r in "$OUT"/*.meta.json; do
        [[ $r == */d-hold.meta.json ]] && continue
        local n=${r%.meta.json}
        jq -r -s '.[0] as $m | .[1] as $r |
            "| \($m.name) | \($r.completed)/\($r.transactions) | \($r.transactions_per_sec | floor) | \(($r.latency.p50_us | round) / 1000) | \(($r.latency.p99_us | round) / 1000) | \($m.milter_cpu_secs * 1e6 / $r.transactions | round) | \($m.loadgen_cpu_secs * 1e6 / $r.transactions | round) | \($m.dns_queries) | \($r.statuses | to_entries | map("\(.key) \(.value)") | join(", ")) |"' \
            "$r" "$n.json"
    done
    echo
    echo "ratios (throughput; milter CPU per transaction):"
    ratio() { # label numerator-runs denominator-runs (mean over the runs that exist)
        local label=$1 num=$2 den=$3 r tn td cn cdn
        for r in $num $den; do
            [[ -f $OUT/$r.json ]] || return 0
        done
        mean_tps() { for r in "$@"; do jq .transactions_per_sec "$OUT/$r.json"; done | awk '{s += $1} END {print s / NR}'; }
        mean_cpu() {
            for r in "$@"; do
                jq -s '.[0].milter_cpu_secs * 1e6 / .[1].transactions' "$OUT/$r.meta.json" "$OUT/$r.json"
            done | awk '{s += $1} END {print s / NR}'
        }
        # shellcheck disable=SC2086 # run names are words
        tn=$(mean_tps $num) td=$(mean_tps $den) cn=$(mean_cpu $num) cdn=$(mean_cpu $den)
        awk -v l="$label" -v tn="$tn" -v td="$td" -v cn="$cn" -v cd="$cdn" 'BEGIN {
            printf "- %s: %.0f / %.0f tx/s = %.2f; %.0f / %.0f us milter CPU per tx = %.2f\n", l, tn, td, tn / td, cn, cd, cn / cd }'
    }
    ratio "a nobounce / noop floor" "a-nobounce-1 a-nobounce-2" "a-noop-1 a-noop-2"
    ratio "a nobounce / noop floor inserting 1 header" "a-nobounce-1 a-nobounce-2" "a-noop1h-1 a-noop1h-2"
    ratio "a nobounce with both SPF headers / noop floor" "a-nobounce-2h" "a-noop-1 a-noop-2"
    ratio "a nobounce with both SPF headers / noop floor inserting 2 headers" "a-nobounce-2h" "a-noop2h"
    ratio "a nobounce without headers / noop floor" "a-nobounce-noheaders" "a-noop-1 a-noop-2"
    ratio "a nobounce log level warn / noop floor inserting 1 header" "a-nobounce-warnlog" "a-noop1h-1 a-noop1h-2"
    ratio "b cold / warm" "b-cold" "b-warm"
    ratio "b DNS cache only / warm" "b-dnscache" "b-warm"
    ratio "e nobounce / noop floor (one connection)" "e-nobounce" "e-noop"
    ratio "f Redis / memory store" "f-redis" "f-memory"
    if [[ -f $OUT/d-hold.json ]]; then
        echo
        echo "hold:"
        jq -c '{attempted, established, decided_at_setup, held_secs, open_errors, after_hold_statuses, after_hold_errors, setup_p99_us: .setup_latency.p99_us}' "$OUT/d-hold.json"
        jq -c . "$OUT/d-hold.meta.json"
    fi
    if [[ -f $OUT/c-rss.json ]]; then
        echo
        echo "cache memory:"
        jq -c . "$OUT/c-rss.json"
    fi
}
summary >"$OUT/summary.md"
cat "$OUT/summary.md"
log "results in $OUT"
