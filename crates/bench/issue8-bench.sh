#!/usr/bin/env bash
# Issue 8: nobounce against the protocol floors and the peer spf-milter 0.6,
# on the milter protocol (milter-loadgen) and through a real Postfix
# (smtp-source), side by side in one run.
#
#   crates/bench/issue8-bench.sh               # everything, ~15-20 minutes
#   QUICK=1 crates/bench/issue8-bench.sh       # tiny sizes: checks the script
#   PARTS=milter crates/bench/issue8-bench.sh  # only the milter-loadgen part
#   PARTS=postfix crates/bench/issue8-bench.sh # only the Postfix part
#
# Loopback only. Every process the script starts (bench-dns, the milters,
# spf-milter, smtp-sink, the private Postfix masters) is stopped by its PID
# when the script exits. Results go to
# target/bench-results/issue8-<UTC stamp>/: runs/NAME.json (one per measured
# run: milter-loadgen's report plus a "bench" object, or the Postfix run),
# warmup/ (calibration and warm-up passes), configs/, logs/ (tails),
# commands.txt, machine.txt and summary.md (the tables and the ratios of
# issue 8's "Done when").
#
# Settings (environment):
#   QUICK=1            tiny sizes, to check that the script works end to end
#   PARTS              "milter postfix" (default)
#   TARGETS            milters of the loadgen part, default
#                      "plain policy nobounce nobounce-unix spf-milter
#                      spf-milter-inet" (nobounce-unix, spf-milter: on a UNIX
#                      socket; nobounce, spf-milter-inet: on TCP,
#                      measured with 12 headers only, see below)
#   RUN_SECS           seconds each measured loadgen run should last (12; the
#                      transaction count comes from a calibration pass)
#   ROUNDS             measured rounds of the loadgen part (1); the summary
#                      gives the mean
#   CONCURRENCY        milter connections in parallel (8)
#   HEADERS_LIST       header counts ("2 12 30")
#   MPC_LIST           messages per connection ("1 10")
#   PF_SESSIONS        smtp-source parallel sessions ("20 100")
#   PF_MSGS            messages per Postfix run (5000)
#   PF_ROUNDS          measured rounds of the Postfix part (2)
#   PF_CONFIGS         Postfix setups ("alone noop policy nobounce
#                      nobounce-unix": alone, + noop-milter --mode all,
#                      + noop-milter --mode policy, + nobounce on TCP,
#                      + nobounce on a UNIX socket)
#   PF_LAT_MSGS        messages of the one-session run per setup (200)
#   SPF_MILTER         spf-milter binary (default: /tmp/spf-milter-0.6/bin/
#                      spf-milter, installed with cargo install if missing)
#   SPF_MILTER_INSTALL 0: never run cargo install
#   LOADGEN_THREADS    runtime threads of milter-loadgen (1)

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$ROOT/target/bench-results/issue8-$STAMP}
QUICK=${QUICK:-0}
PARTS=${PARTS:-"milter postfix"}
TARGETS=${TARGETS:-"plain policy nobounce nobounce-unix spf-milter spf-milter-inet"}
CONCURRENCY=${CONCURRENCY:-8}
HEADERS_LIST=${HEADERS_LIST:-"2 12 30"}
MPC_LIST=${MPC_LIST:-"1 10"}
LAT_HEADERS=12
LOADGEN_THREADS=${LOADGEN_THREADS:-1}
PF_SESSIONS=${PF_SESSIONS:-"20 100"}
PF_CONFIGS=${PF_CONFIGS:-"alone noop policy nobounce nobounce-unix"}
SPF_MILTER_ROOT=${SPF_MILTER_ROOT:-/tmp/spf-milter-0.6}
SPF_MILTER=${SPF_MILTER:-$SPF_MILTER_ROOT/bin/spf-milter}
SPF_MILTER_INSTALL=${SPF_MILTER_INSTALL:-1}
if [[ $QUICK == 1 ]]; then
    RUN_SECS=${RUN_SECS:-1} CAL_SECS=${CAL_SECS:-0.3} CAL_TXNS=${CAL_TXNS:-200}
    MIN_TXNS=${MIN_TXNS:-200} WARM_TXNS=${WARM_TXNS:-1000} ROUNDS=${ROUNDS:-1}
    PF_MSGS=${PF_MSGS:-200} PF_WARMUP=${PF_WARMUP:-40} PF_ROUNDS=${PF_ROUNDS:-1} PF_LAT_MSGS=${PF_LAT_MSGS:-20}
else
    RUN_SECS=${RUN_SECS:-12} CAL_SECS=${CAL_SECS:-2} CAL_TXNS=${CAL_TXNS:-200}
    MIN_TXNS=${MIN_TXNS:-200} WARM_TXNS=${WARM_TXNS:-20000} ROUNDS=${ROUNDS:-1}
    PF_MSGS=${PF_MSGS:-5000} PF_WARMUP=${PF_WARMUP:-500} PF_ROUNDS=${PF_ROUNDS:-2} PF_LAT_MSGS=${PF_LAT_MSGS:-200}
fi
MAX_TXNS=${MAX_TXNS:-2000000}

# The workload of every loadgen run: senders of 1000 SPF-pass domains drawn
# Zipf-like, 50 client addresses (none in a trusted network), one recipient,
# Postfix-like macros. Same seed everywhere: a warm-up pass with the same
# arguments sends the very same transactions.
WORKLOAD=(--domains 1000 --zipf 1.1 --client-ips 50 --recipients 1 --macros --seed 1
    --threads "$LOADGEN_THREADS")

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
want_part() { [[ " $PARTS " == *" $1 "* ]]; }
want_target() { [[ " $TARGETS " == *" $1 "* ]]; }

# --- tools ---------------------------------------------------------------

need() { # tool [hint]
    command -v "$1" >/dev/null 2>&1 || die "$1 not found${2:+ ($2)}"
}
for t in cargo git jq awk ss timeout; do need "$t"; done
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found (apt-get install time)"
PATH=$PATH:/usr/sbin:/sbin
if want_part postfix; then
    for t in postfix postconf smtp-source smtp-sink; do
        need "$t" "apt-get install postfix; or PARTS=milter"
    done
    [[ $(id -u) == 0 ]] || die "the Postfix part needs root (private Postfix instance); or PARTS=milter"
    id postfix >/dev/null 2>&1 || die "user postfix missing (install the postfix package)"
fi

mkdir -p "$OUT"/{runs,warmup,configs,logs}
WORK=$(mktemp -d /tmp/nobounce-issue8.XXXXXX)
# Postfix daemons (user postfix) must reach their directories below WORK.
chmod 755 "$WORK"
PIDS=()       # our processes, stopped in reverse order
PF_MASTERS=() # Postfix masters (not our children: postfix start daemonizes)
COMMANDS=$OUT/commands.txt
: >"$COMMANDS"

declare -A STOPPED # PIDs already stopped and reaped: never signalled again
stop_pid() {
    local pid=$1 i
    [[ -n ${STOPPED[$pid]:-} ]] && return 0
    STOPPED[$pid]=1
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

stop_postfix() { # master pids...: TERM (a master stops its children), wait, then KILL its group
    local pid i alive
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for i in $(seq 300); do
        alive=0
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || return 0
        sleep 0.05
    done
    # master -w runs as session and process group leader.
    for pid in "$@"; do
        kill -0 "$pid" 2>/dev/null || continue
        log "postfix master $pid still running after 15 s: KILL to its process group"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    done
}

cleanup() {
    local i
    set +e
    ((${#PF_MASTERS[@]})) && stop_postfix "${PF_MASTERS[@]}"
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

record() { # what, command words...: appends the exact command to commands.txt
    local what=$1
    shift
    {
        printf '# %s\n' "$what"
        printf '%q ' "$@"
        printf '\n'
    } >>"$COMMANDS"
}

# --- build ---------------------------------------------------------------

# One build; the binaries are copied so that a rebuild in the same tree
# during the run cannot swap a binary under the measurement.
log "building (release): nobounce, nobounce-bench"
record build cargo build --release -p nobounce -p nobounce-bench
(cd "$ROOT" && cargo build --release --quiet -p nobounce -p nobounce-bench)
BIN=$WORK/bin
mkdir -p "$BIN"
for b in nobounce milter-loadgen noop-milter bench-dns; do
    cp "$ROOT/target/release/$b" "$BIN/"
done

# spf-milter 0.6 from crates.io (GPL-3.0, not a dependency of the workspace).
SPF_STATUS=""
if want_part milter && { want_target spf-milter || want_target spf-milter-inet; }; then
    if [[ ! -x $SPF_MILTER && $SPF_MILTER_INSTALL == 1 ]]; then
        log "installing spf-milter 0.6 from crates.io into $SPF_MILTER_ROOT (a few minutes)"
        record "spf-milter build" cargo install spf-milter --version '^0.6' --root "$SPF_MILTER_ROOT" --locked
        if ! cargo install spf-milter --version '^0.6' --root "$SPF_MILTER_ROOT" --locked \
            >"$OUT/logs/spf-milter-install.log" 2>&1; then
            record "spf-milter build (--locked failed)" cargo install spf-milter --version '^0.6' --root "$SPF_MILTER_ROOT"
            cargo install spf-milter --version '^0.6' --root "$SPF_MILTER_ROOT" \
                >>"$OUT/logs/spf-milter-install.log" 2>&1 || true
        fi
    fi
    if [[ -x $SPF_MILTER ]]; then
        cp "$SPF_MILTER" "$BIN/spf-milter"
        ver=$(cargo install --list --root "$SPF_MILTER_ROOT" 2>/dev/null | sed -n 's/^spf-milter \(v[^:]*\):$/\1/p')
        SPF_STATUS="built: $("$BIN/spf-milter" --version 2>&1 | head -1) ($SPF_MILTER${ver:+, crate $ver from crates.io, cargo install --root $SPF_MILTER_ROOT})"
    elif [[ -f $OUT/logs/spf-milter-install.log ]]; then
        SPF_STATUS="did not build (cargo install failed, see logs/spf-milter-install.log): $(grep -m1 '^error' "$OUT/logs/spf-milter-install.log" || tail -1 "$OUT/logs/spf-milter-install.log")"
    else
        SPF_STATUS="not measured: $SPF_MILTER missing and SPF_MILTER_INSTALL=0"
    fi
    if [[ $SPF_STATUS == built* ]] && ! unshare -m --propagation private true 2>/dev/null; then
        SPF_STATUS="not measured: 'unshare -m' fails here (needs CAP_SYS_ADMIN); spf-milter reads its resolver only from /etc/resolv.conf"
    fi
    log "spf-milter: $SPF_STATUS"
fi

ulimit -n "$(ulimit -Hn)"

commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | wc -l)
{
    echo "date: $STAMP"
    echo "commit: $commit$([[ $dirty -gt 0 ]] && echo " + $dirty modified tracked files (uncommitted changes are in the measured binaries)")"
    echo "nproc: $(nproc)"
    echo "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1 | grep . || echo "unknown (no model name in /proc/cpuinfo)")"
    echo "kernel: $(uname -sr)"
    echo "memory: $(sed -n 's/^MemTotal:[[:space:]]*//p' /proc/meminfo)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "rustc: $(rustc --version)"
    echo "postfix: $(postconf -d -h mail_version 2>/dev/null || echo none)"
    echo "spf-milter: ${SPF_STATUS:-not requested}"
    echo "quick: $QUICK"
} >"$OUT/machine.txt"

# --- helpers -------------------------------------------------------------

free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 40000))
        if ! ss -Htan "sport = :$p" | grep -q . && ! ss -Huan "sport = :$p" | grep -q .; then
            echo "$p"
            return 0
        fi
    done
    die "no free port"
}

wait_listen() { # port pid [ip]: waits until a TCP listener is on ip:port
    local ip=${3:-127.0.0.1}
    for _ in $(seq 200); do
        ss -Hltn "src $ip and sport = :$1" | grep -q . && return 0
        if [[ -n $2 ]] && ! kill -0 "$2" 2>/dev/null; then
            log "process $2 exited before listening on $ip:$1"
            return 1
        fi
        sleep 0.05
    done
    log "nothing listens on $ip:$1 after 10 s"
    return 1
}

wait_socket() { # path pid: waits until the UNIX socket exists
    for _ in $(seq 200); do
        [[ -S $1 ]] && return 0
        kill -0 "$2" 2>/dev/null || {
            log "process $2 exited before creating $1"
            return 1
        }
        sleep 0.05
    done
    log "no socket $1 after 10 s"
    return 1
}

vm_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# Machine CPU: "busy total" jiffies from /proc/stat.
machine_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t }' /proc/stat; }

# bench-dns: NAME [args...]; address in DNS_ADDR[NAME], PID in DNS_PID[NAME].
declare -A DNS_PID DNS_OUT DNS_ADDR
start_dns() {
    local name=$1 addr=""
    shift
    DNS_OUT[$name]=$WORK/$name.out
    record "bench-dns $name" "$BIN/bench-dns" "$@"
    "$BIN/bench-dns" "$@" >"${DNS_OUT[$name]}" 2>"$WORK/$name.err" &
    DNS_PID[$name]=$!
    PIDS+=("$!")
    for _ in $(seq 200); do
        addr=$(sed -n 's/^bench-dns listening on //p' "${DNS_OUT[$name]}")
        [[ -n $addr ]] && break
        kill -0 "${DNS_PID[$name]}" 2>/dev/null || break
        sleep 0.05
    done
    [[ -n $addr ]] || {
        cat "$WORK/$name.err" >&2
        die "bench-dns $name did not start"
    }
    DNS_ADDR[$name]=$addr
    log "bench-dns $name (pid ${DNS_PID[$name]}) on $addr"
}

dns_queries() { # name -> queries received so far
    local name=$1 before after
    before=$(grep -c queries "${DNS_OUT[$name]}" || true)
    kill -USR1 "${DNS_PID[$name]}"
    for _ in $(seq 200); do
        after=$(grep -c queries "${DNS_OUT[$name]}" || true)
        [[ $after -gt $before ]] && break
        sleep 0.01
    done
    grep queries "${DNS_OUT[$name]}" | tail -1 | jq .queries
}

# nobounce's defaults, plus what issue 8 asks: no trusted network (the
# generated clients are checked), no control socket, bench-dns as resolver.
nb_config() { # file port dns-addr [unix-socket-path]
    if [[ -n ${4:-} ]]; then
        # Postfix's daemons (group postfix) connect; nobounce refuses a
        # socket mode that lets others in.
        printf 'socket = "unix:%s"\n[milter]\nsocket_group = "postfix"\n' "$4" >"$1"
    else
        printf 'socket = "inet:127.0.0.1:%s"\n' "$2" >"$1"
    fi
    cat >>"$1" <<EOF
[dns]
nameservers = ["$3"]
[spf]
trusted_networks = []
[store]
control_socket = ""
EOF
}

declare -A T_PID T_PORT T_ADDR T_DNS
start_target() { # target-name kind [args]: kind is plain|policy|all|nobounce|spf-milter|spf-milter-inet
    local name=$1 kind=$2 port pid sock=""
    port=$(free_port)
    case $kind in
    plain | policy | all)
        record "noop-milter ($name)" "$BIN/noop-milter" --listen "127.0.0.1:$port" --mode "$kind"
        "$BIN/noop-milter" --listen "127.0.0.1:$port" --mode "$kind" \
            >"$WORK/$name.log" 2>&1 &
        pid=$!
        T_DNS[$name]=""
        ;;
    nobounce | nobounce-unix)
        if [[ $kind == nobounce-unix ]]; then
            sock=$WORK/$name.sock
            T_ADDR[$name]=unix:$sock
        fi
        nb_config "$OUT/configs/$name.toml" "$port" "$3" "$sock"
        record "nobounce ($name), config configs/$name.toml" "$BIN/nobounce" run --config "$OUT/configs/$name.toml"
        "$BIN/nobounce" run --config "$OUT/configs/$name.toml" >"$WORK/$name.log" 2>&1 &
        pid=$!
        T_DNS[$name]=$4
        ;;
    spf-milter | spf-milter-inet)
        # spf-milter 0.6 has no resolver setting: it builds domain's
        # StubResolver from /etc/resolv.conf (nameservers on port 53 only).
        # A private mount namespace shows it a resolv.conf that points at
        # bench-dns; unshare and sh exec, so $! is spf-milter itself.
        printf 'nameserver %s\n' "$3" >"$OUT/configs/$name.resolv.conf"
        if [[ $kind == spf-milter ]]; then
            sock=$WORK/$name.sock
            T_ADDR[$name]=unix:$sock
        else
            T_ADDR[$name]=inet:127.0.0.1:$port
        fi
        cat >"$OUT/configs/$name.conf" <<EOF
socket = ${T_ADDR[$name]}
log_destination = stderr
log_level = info
hostname = mx.bench.test
EOF
        local cmd=(unshare -m --propagation private sh -c
            'mount --bind "$1" /etc/resolv.conf && exec "$2" -c "$3"'
            sh "$OUT/configs/$name.resolv.conf" "$BIN/spf-milter" "$OUT/configs/$name.conf")
        record "spf-milter ($name), config configs/$name.conf, resolver configs/$name.resolv.conf" "${cmd[@]}"
        "${cmd[@]}" >"$WORK/$name.log" 2>&1 &
        pid=$!
        T_DNS[$name]=$4
        ;;
    *) die "unknown target kind $kind" ;;
    esac
    PIDS+=("$pid")
    if [[ -n $sock ]]; then
        wait_socket "$sock" "$pid"
    else
        wait_listen "$port" "$pid"
    fi || {
        tail -20 "$WORK/$name.log" >&2
        die "$name did not start"
    }
    T_PID[$name]=$pid
    T_PORT[$name]=$port
    [[ -n ${T_ADDR[$name]:-} ]] || T_ADDR[$name]=inet:127.0.0.1:$port
    log "$name: pid $pid on ${T_ADDR[$name]}"
}

# One milter-loadgen run. DIR is runs or warmup; the JSON is loadgen's report
# plus "bench" (what was run, loadgen's CPU, DNS queries, milter RSS).
LAST_JSON=""
load() { # dir name target conc mpc headers round txns
    local dir=$1 name=$2 t=$3 conc=$4 mpc=$5 hdr=$6 round=$7 txns=$8
    local raw=$WORK/$name.raw.json rc=0 q0=0 q1=0 d0=0 d1=0 lu ls dns=${T_DNS[$3]}
    local cmd=("$BIN/milter-loadgen" --milter "${T_ADDR[$t]}" --json
        --concurrency "$conc" --messages-per-connection "$mpc" --headers "$hdr"
        --transactions "$txns" --target-pid "${T_PID[$t]}" "${WORKLOAD[@]}")
    [[ $dir == runs ]] && record "run $name" "${cmd[@]}"
    if [[ -n $dns ]]; then
        q0=$(dns_queries "$dns")
        d0=$(cpu_ticks "${DNS_PID[$dns]}")
    fi
    /usr/bin/time -o "$WORK/$name.time" -f '%U %S' timeout 1800 "${cmd[@]}" >"$raw" || rc=$?
    if [[ -n $dns ]]; then
        d1=$(cpu_ticks "${DNS_PID[$dns]}")
        q1=$(dns_queries "$dns")
    fi
    [[ $rc == 0 || $rc == 1 ]] && [[ -s $raw ]] || {
        tail -20 "$WORK/$t.log" >&2
        die "milter-loadgen $name failed (exit $rc)"
    }
    read -r lu ls <"$WORK/$name.time"
    LAST_JSON=$OUT/$dir/$name.json
    jq --arg name "$name" --arg target "$t" --argjson conc "$conc" --argjson mpc "$mpc" \
        --argjson hdr "$hdr" --argjson round "$round" --argjson rc "$rc" \
        --arg cmd "$(printf '%q ' "${cmd[@]}")" --argjson lcpu "$(awk -v u="$lu" -v s="$ls" 'BEGIN { print u + s }')" \
        --argjson q "$((q1 - q0))" --argjson dcpu "$(awk -v t="$((d1 - d0))" -v hz="$(getconf CLK_TCK)" 'BEGIN { print t / hz }')" \
        --argjson rss "$(vm_kb "${T_PID[$t]}" VmRSS)" \
        '. + {bench: {part: "milter", name: $name, target: $target, concurrency: $conc,
          messages_per_connection: $mpc, headers: $hdr, round: $round, command: $cmd,
          loadgen_exit: $rc, loadgen_cpu_secs: $lcpu,
          loadgen_cpu_us_per_txn: (if .completed > 0 then $lcpu * 1e6 / .completed else null end),
          dns_queries: $q, dns_server_cpu_secs: $dcpu,
          dns_server_cpu_us_per_txn: (if .completed > 0 then $dcpu * 1e6 / .completed else null end),
          target_rss_kb: $rss}}' "$raw" >"$LAST_JSON"
    jq -r '"\(.bench.name): \(.completed)/\(.transactions) in \(.elapsed_secs * 10 | round / 10) s, \(.transactions_per_sec | round) tx/s, p50 \(.latency.p50_us | round) µs, p99 \(.latency.p99_us | round) µs, target CPU \(.target_cpu_us_per_txn // 0 | round) µs/tx, DNS queries \(.bench.dns_queries), errors \(.errors)"' \
        "$LAST_JSON" >&2
}

# A sanity check for the summary: the SPF results a milter logged over the
# whole part (warm-up passes included), when its log has them.
SANITY=$OUT/spf-results.txt
: >"$SANITY"
spf_results() { # target
    local counts
    counts=$({ grep -oE 'result="[a-z]+"|\((helo|mailfrom)\): [a-z]+' "$WORK/$1.log" || true; } |
        sort | uniq -c | awk '{ $1 = $1; print }' | paste -sd ';' -)
    [[ -n $counts ]] && echo "- $1: $counts" >>"$SANITY"
    return 0
}

# Transactions for RUN_SECS at the rate a calibration pass measured (the
# pass doubles as the warm-up of the target for this shape).
CAL_N=0
calibrate() { # name target conc mpc headers -> the transaction count in CAL_N
    local name=$1 t=$2 conc=$3 mpc=$4 hdr=$5 n=$CAL_TXNS tps secs
    for try in 1 2 3; do
        load warmup "$name-cal$try" "$t" "$conc" "$mpc" "$hdr" 0 "$n"
        tps=$(jq '.transactions_per_sec' "$LAST_JSON")
        secs=$(jq '.elapsed_secs' "$LAST_JSON")
        awk -v s="$secs" -v m="$CAL_SECS" 'BEGIN { exit !(s >= m) }' && break
        n=$(awk -v r="$tps" -v m="$CAL_SECS" -v n="$n" 'BEGIN { x = int(r * m * 1.2) + 1; print (x > n ? x : n * 4) }')
    done
    CAL_N=$(awk -v r="$tps" -v s="$RUN_SECS" -v lo="$MIN_TXNS" -v hi="$MAX_TXNS" \
        'BEGIN { x = int(r * s * 1.05) + 1; if (x < lo) x = lo; if (x > hi) x = hi; print x }')
}

# --- part 1: milter-loadgen ----------------------------------------------

declare -A NTX
if want_part milter; then
    log "part 1: milter-loadgen, $CONCURRENCY connections, msgs/conn {$MPC_LIST} x headers {$HEADERS_LIST}, and one connection"
    start_dns dns --domains 1000 --ttl 3600
    ACTIVE=()
    if want_target plain; then start_target plain plain && ACTIVE+=(plain); fi
    if want_target policy; then start_target policy policy && ACTIVE+=(policy); fi
    for t in nobounce nobounce-unix; do
        if want_target $t; then start_target $t $t "${DNS_ADDR[dns]}" dns && ACTIVE+=($t); fi
    done
    if { want_target spf-milter || want_target spf-milter-inet; } && [[ $SPF_STATUS == built* ]]; then
        # resolv.conf means port 53: a loopback address whose port 53 is free.
        dns53=""
        for ip in 127.0.0.1 127.0.1.53 127.8.0.53; do
            if ! ss -Hltun 'sport = :53' | awk '{ print $5 }' |
                grep -qE "^($ip|0\.0\.0\.0|\*|\[::\]):53\$"; then
                dns53=$ip
                break
            fi
        done
        if [[ -z $dns53 ]]; then
            SPF_STATUS="not measured: no loopback address with a free port 53 for its resolver"
        else
            start_dns dns53 --domains 1000 --ttl 3600 --listen "$dns53:53"
            for t in spf-milter spf-milter-inet; do
                if want_target "$t"; then start_target "$t" "$t" "$dns53" dns53 && ACTIVE+=("$t"); fi
            done
        fi
    fi
    ((${#ACTIVE[@]})) || die "no target to measure"

    for t in nobounce nobounce-unix; do
        if [[ -n ${T_PID[$t]:-} ]]; then
            log "$t: warm-up pass of $WARM_TXNS transactions (fills the DNS and SPF caches)"
            load warmup "warm-$t" "$t" "$CONCURRENCY" 10 12 0 "$WARM_TXNS"
        fi
    done

    SHAPES=()
    for mpc in $MPC_LIST; do
        for hdr in $HEADERS_LIST; do SHAPES+=("$CONCURRENCY $mpc $hdr"); done
    done
    for mpc in $MPC_LIST; do SHAPES+=("1 $mpc $LAT_HEADERS"); done

    for round in $(seq "$ROUNDS"); do
        for shape in "${SHAPES[@]}"; do
            read -r conc mpc hdr <<<"$shape"
            for t in "${ACTIVE[@]}"; do
                # spf-milter on TCP pays ~40 ms per transaction (Nagle's
                # algorithm against delayed ACKs, see the summary): 12
                # headers only, or it would take most of the run.
                [[ $t == spf-milter-inet && $hdr != "$LAT_HEADERS" ]] && continue
                base="c$conc-m$mpc-h$hdr-$t"
                if [[ -z ${NTX[$base]:-} ]]; then
                    calibrate "$base" "$t" "$conc" "$mpc" "$hdr"
                    NTX[$base]=$CAL_N
                    # nobounce: replay the measured transactions once, so that
                    # every SPF answer they need is cached.
                    [[ $t == nobounce* ]] &&
                        load warmup "$base-warm" "$t" "$conc" "$mpc" "$hdr" 0 "${NTX[$base]}"
                fi
                load runs "$base-r$round" "$t" "$conc" "$mpc" "$hdr" "$round" "${NTX[$base]}"
            done
        done
    done
    for t in "${ACTIVE[@]}"; do
        stop_pid "${T_PID[$t]}"
        spf_results "$t"
        tail -n 100 "$WORK/$t.log" >"$OUT/logs/$t.log.tail"
    done
fi

# --- part 2: Postfix with smtp-source --------------------------------------

# A private Postfix like crates/test-support/src/postfix.rs builds for the
# e2e tests: its own config, queue and data directories and maillog_file in
# a temporary directory, smtpd on a free 127.0.0.1 port, no DNS, accepted
# mail relayed to smtp-sink.
declare -A PF_DIR PF_PORT PF_MILTER_PID
pf_start() { # name sink-port [milter-spec milter-pid]
    local name=$1 sink=$2 mspec=${3:-} dir port master
    dir=$WORK/pf-$name
    port=$(free_port)
    mkdir -p "$dir/conf" "$dir/queue"
    chmod 755 "$dir"
    cat >"$dir/conf/main.cf" <<EOF
# nobounce issue8-bench.sh: private instance "$name"
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-bench-$name
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
myhostname = mx.bench.test
mydomain = bench.test
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = example.test
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions =
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtp_host_lookup = native
append_dot_mydomain = no
alias_maps =
alias_database =
local_recipient_maps =
biff = no
relayhost = [127.0.0.1]:$sink
# Room for 100 sessions plus delivery; no pause when arrival outruns
# delivery (the sink is fast, but a pause would measure the queue, not smtpd).
default_process_limit = 250
in_flow_delay = 0s
smtp_destination_concurrency_limit = 20
milter_protocol = 6
milter_default_action = tempfail
milter_connect_timeout = 5s
milter_command_timeout = 10s
milter_content_timeout = 10s
milter_connect_macros = j {daemon_name} {daemon_addr} v _ {client_addr} {client_name}
milter_mail_macros = i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer} {client_addr}
milter_rcpt_macros = i {rcpt_addr} {rcpt_host} {rcpt_mailer}
milter_data_macros = i
milter_end_of_data_macros = i
smtpd_delay_open_until_valid_rcpt = no
smtpd_milters = $mspec
non_smtpd_milters =
EOF
    cat >"$dir/conf/master.cf" <<EOF
127.0.0.1:$port inet n - n - - smtpd
pickup     unix  n - n 60    1 pickup
cleanup    unix  n - n -     0 cleanup
qmgr       unix  n - n 300   1 qmgr
rewrite    unix  - - n -     - trivial-rewrite
bounce     unix  - - n -     0 bounce
defer      unix  - - n -     0 bounce
trace      unix  - - n -     0 bounce
verify     unix  - - n -     1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -     - proxymap
proxywrite unix  - - n -     1 proxymap
smtp       unix  - - n -     - smtp
relay      unix  - - n -     - smtp
showq      unix  n - n -     - showq
error      unix  - - n -     - error
retry      unix  - - n -     - error
discard    unix  - - n -     - discard
lmtp       unix  - - n -     - lmtp
anvil      unix  - - n -     1 anvil
scache     unix  - - n -     1 scache
postlog    unix-dgram n - n - 1 postlogd
EOF
    # Postfix re-reads a main.cf younger than a second or so until it is
    # old enough; a settled mtime spares that.
    touch -d '-60 seconds' "$dir/conf/main.cf" "$dir/conf/master.cf"
    cp "$dir/conf/main.cf" "$OUT/configs/postfix-$name.main.cf"
    cp "$dir/conf/master.cf" "$OUT/configs/postfix-$name.master.cf"
    record "postfix ($name), configs/postfix-$name.main.cf and .master.cf" postfix -c "$dir/conf" start
    if ! postfix -c "$dir/conf" start >"$dir/start.out" 2>&1; then
        cat "$dir/start.out" "$dir/maillog" >&2 2>/dev/null || true
        master=$(tr -d ' ' <"$dir/queue/pid/master.pid" 2>/dev/null || true)
        [[ -n $master ]] && PF_MASTERS+=("$master")
        die "postfix $name did not start"
    fi
    master=$(tr -d ' ' <"$dir/queue/pid/master.pid")
    PF_MASTERS+=("$master")
    wait_listen "$port" "$master" || die "postfix $name does not listen"
    PF_DIR[$name]=$dir
    PF_PORT[$name]=$port
    PF_MILTER_PID[$name]=${4:-}
    log "postfix $name: master pid $master, smtpd on 127.0.0.1:$port${mspec:+, milter $mspec}"
}

pf_queued() { find "${PF_DIR[$1]}"/queue/{maildrop,incoming,active,deferred,hold} -type f 2>/dev/null | wc -l; }
pf_count() { grep -c -- "$2" "${PF_DIR[$1]}/maillog" 2>/dev/null || true; }

pf_wait_empty() { # name: waits until the queue is empty (delivered to the sink)
    local i
    for i in $(seq 2400); do
        [[ $(pf_queued "$1") == 0 ]] && return 0
        sleep 0.05
    done
    log "postfix $1: $(pf_queued "$1") messages still queued after 120 s"
    return 1
}

# The message smtp-source sends: 11 Postfix-like headers (Postfix adds its
# Received: the milter sees 12, as in the loadgen part) and a short body.
write_message() {
    {
        printf 'Received: from mail0.d.bench.test (mail0.d.bench.test [198.51.100.1]) by relay.d1.bench.test (Postfix) with ESMTPS id 4AB12C3D4E for <user@example.test>; Sun, 29 Nov 2026 11:00:00 +0000 (UTC)\n'
        printf 'Received: from client.d1.bench.test (client.d1.bench.test [198.51.100.2]) by mail0.d.bench.test (Postfix) with ESMTPSA id 5BC23D4E5F; Sun, 29 Nov 2026 10:59:59 +0000 (UTC)\n'
        printf 'DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=d1.bench.test; s=s2026; t=1795780800;\n\tbh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; h=From:To:Subject:Date:Message-ID;\n\tb=%s\n' \
            "$(printf 'kB3nJ9xQ2zT8vL0mR5sW7yE1uP4cA6dF%.0s' 1 2 3 4 5 6 7 8)"
        printf 'From: Bench Sender <sender1@d1.bench.test>\n'
        printf 'To: Bench Recipient <user@example.test>\n'
        printf 'Subject: Benchmark message\n'
        printf 'Date: Sun, 29 Nov 2026 11:09:09 +0000\n'
        printf 'Message-ID: <bench.1@d1.bench.test>\n'
        printf 'MIME-Version: 1.0\n'
        printf 'Content-Type: text/plain; charset=utf-8; format=flowed\n'
        printf 'Content-Transfer-Encoding: 8bit\n'
        printf '\n'
        printf 'A short benchmark message body.\n'
        printf 'Second line of the body.\n'
    } >"$1"
}

pf_run() { # dir name config sessions messages round
    local dir=$1 name=$2 cfg=$3 s=$4 m=$5 round=$6 rc=0
    local c0 c1 m0 m1 t0 t1 t2 sent0 sent1 rej0 rej1 warn0 warn1 mpid=${PF_MILTER_PID[$3]}
    local cmd=(smtp-source -4 -s "$s" -m "$m" -f sender1@d1.bench.test -t user@example.test
        -M client.bench.test -F "$MSG" "127.0.0.1:${PF_PORT[$cfg]}")
    pf_wait_empty "$cfg" || true
    [[ $dir == runs ]] && record "postfix run $name" "${cmd[@]}"
    sent0=$(pf_count "$cfg" 'status=sent')
    rej0=$(pf_count "$cfg" 'milter-reject')
    warn0=$(pf_count "$cfg" 'warning: milter')
    c0=0
    [[ -n $mpid ]] && c0=$(cpu_ticks "$mpid")
    read -r m0 tt0 < <(machine_ticks)
    t0=$(date +%s.%N)
    timeout 1800 "${cmd[@]}" >"$WORK/$name.out" 2>"$WORK/$name.err" || rc=$?
    t1=$(date +%s.%N)
    c1=0
    [[ -n $mpid ]] && c1=$(cpu_ticks "$mpid")
    read -r m1 tt1 < <(machine_ticks)
    pf_wait_empty "$cfg" || true
    t2=$(date +%s.%N)
    # postlogd writes a moment later: wait for the sent lines to stop growing.
    sent1=$(pf_count "$cfg" 'status=sent')
    for _ in $(seq 100); do
        [[ $((sent1 - sent0)) -ge $m ]] && break
        sleep 0.05
        sent1=$(pf_count "$cfg" 'status=sent')
    done
    rej1=$(pf_count "$cfg" 'milter-reject')
    warn1=$(pf_count "$cfg" 'warning: milter')
    jq -n --arg name "$name" --arg cfg "$cfg" --argjson s "$s" --argjson m "$m" \
        --argjson round "$round" --arg cmd "$(printf '%q ' "${cmd[@]}")" --argjson rc "$rc" \
        --argjson t0 "$t0" --argjson t1 "$t1" --argjson t2 "$t2" \
        --argjson hz "$(getconf CLK_TCK)" --argjson c "$((c1 - c0))" --argjson mil "$([[ -n $mpid ]] && echo true || echo false)" \
        --argjson busy "$((m1 - m0))" --argjson total "$((tt1 - tt0))" \
        --argjson sent "$((sent1 - sent0))" --argjson rej "$((rej1 - rej0))" --argjson warn "$((warn1 - warn0))" \
        --arg err "$(tail -c 2000 "$WORK/$name.err")" \
        '{bench: {part: "postfix", name: $name, config: $cfg, sessions: $s, messages: $m,
          round: $round, command: $cmd, smtp_source_exit: $rc, smtp_source_stderr: $err},
          secs: ($t1 - $t0), messages_per_sec: ($m / ($t1 - $t0)),
          secs_until_queue_empty: ($t2 - $t0),
          milter_cpu_us_per_msg: (if $mil then $c / $hz * 1e6 / $m else null end),
          machine_busy_pct: (if $total > 0 then $busy * 100 / $total else null end),
          delivered: $sent, milter_rejects: $rej, milter_warnings: $warn}' >"$OUT/$dir/$name.json"
    jq -r '"\(.bench.name): \(.bench.messages) msgs in \(.secs * 100 | round / 100) s = \(.messages_per_sec | round) msg/s, delivered \(.delivered), milter CPU \(.milter_cpu_us_per_msg // 0 | round) µs/msg, busy \(.machine_busy_pct // 0 | round) %, smtp-source exit \(.bench.smtp_source_exit)"' \
        "$OUT/$dir/$name.json" >&2
    [[ $rc == 0 ]] || log "smtp-source $name: exit $rc: $(tail -3 "$WORK/$name.err")"
}

if want_part postfix; then
    log "part 2: Postfix alone, + noop-milter (--mode all), + nobounce; smtp-source at {$PF_SESSIONS} sessions, $PF_MSGS messages"
    MSG=$WORK/message.eml
    write_message "$MSG"
    cp "$MSG" "$OUT/configs/smtp-source-message.eml"
    # Postfix's client is 127.0.0.1: this bench-dns publishes 127.0.0.0/8 in
    # the SPF record of the sender domain and the HELO name.
    start_dns dns-pf --domains 10 --ttl 3600 --helo client.bench.test \
        --spf "v=spf1 ip4:127.0.0.0/8 ip4:192.0.2.0/24 ip4:198.51.100.0/24 ip4:203.0.113.0/24 ip4:198.18.0.0/15 -all"
    sink_port=$(free_port)
    record "smtp-sink" smtp-sink -u postfix -c "127.0.0.1:$sink_port" 1000
    smtp-sink -u postfix "127.0.0.1:$sink_port" 1000 >"$WORK/smtp-sink.log" 2>&1 &
    sink_pid=$!
    PIDS+=("$sink_pid")
    wait_listen "$sink_port" "$sink_pid" || die "smtp-sink did not start"
    for cfg in $PF_CONFIGS; do
        case $cfg in
        alone) pf_start alone "$sink_port" ;;
        noop | policy)
            start_target "pf-$cfg" "$([[ $cfg == noop ]] && echo all || echo policy)"
            pf_start "$cfg" "$sink_port" "${T_ADDR[pf-$cfg]}" "${T_PID[pf-$cfg]}"
            ;;
        nobounce | nobounce-unix)
            start_target "pf-$cfg" "$cfg" "${DNS_ADDR[dns-pf]}" dns-pf
            pf_start "$cfg" "$sink_port" "${T_ADDR[pf-$cfg]}" "${T_PID[pf-$cfg]}"
            ;;
        *) die "PF_CONFIGS: unknown setup $cfg (alone noop policy nobounce nobounce-unix)" ;;
        esac
    done
    for cfg in $PF_CONFIGS; do
        pf_run warmup "pf-$cfg-warm" "$cfg" 20 "$PF_WARMUP" 0
    done
    for round in $(seq "$PF_ROUNDS"); do
        for s in $PF_SESSIONS; do
            for cfg in $PF_CONFIGS; do
                pf_run runs "pf-$cfg-s$s-r$round" "$cfg" "$s" "$PF_MSGS" "$round"
            done
        done
    done
    # One session: the time per message, where a stall shows (e.g. ~40 ms
    # of Nagle's algorithm against a delayed ACK).
    for cfg in $PF_CONFIGS; do
        pf_run runs "pf-$cfg-s1" "$cfg" 1 "$PF_LAT_MSGS" 1
    done
    for cfg in $PF_CONFIGS; do
        tail -n 200 "${PF_DIR[$cfg]}/maillog" >"$OUT/logs/postfix-$cfg.maillog.tail" || true
    done
    for cfg in $PF_CONFIGS; do
        [[ $cfg == alone ]] && continue
        spf_results "pf-$cfg"
        tail -n 100 "$WORK/pf-$cfg.log" >"$OUT/logs/pf-$cfg.log.tail"
    done
fi

# --- summary -------------------------------------------------------------

summary() {
    echo "# nobounce issue 8 benchmark $STAMP"
    echo
    echo "Produced by \`crates/bench/issue8-bench.sh\`$([[ $QUICK == 1 ]] && echo " with QUICK=1 (tiny sizes: checks the script, the numbers mean nothing)")."
    echo
    sed 's/^/    /' "$OUT/machine.txt"
    echo
    local files=("$OUT"/runs/*.json)
    [[ -e ${files[0]} ]] || {
        echo "No runs."
        return
    }
    jq -r -s --arg spf "${SPF_STATUS:-not requested}" --argjson conc "$CONCURRENCY" \
        --arg mpcs "$MPC_LIST" --arg hdrs "$HEADERS_LIST" --argjson lath "$LAT_HEADERS" \
        --arg sessions "$PF_SESSIONS" --argjson minsecs "$([[ $QUICK == 1 ]] && echo 0.5 || echo 10)" -f /dev/stdin "${files[@]}" <<'JQ'
def mean: if length == 0 or any(. == null) then null else add / length end;
def d(n): if . == null then "—" else (. * pow(10; n) | round) as $x
    | if n == 0 then ($x | tostring)
      else ($x / pow(10; n) | floor | tostring) + "."
        + (($x % pow(10; n)) | tostring | ("0" * (n - length)) + .) end end;
def ms: if . == null then null else . / 1000 end;
def ratio(a; b): if a == null or b == null or b == 0 then null else a / b end;
def check(v; op; lim): if v == null then "not measured"
    elif (op == ">=" and v >= lim) or (op == "<=" and v <= lim) then "**met**" else "not met" end;

([.[] | select(.bench.part == "milter")]
  | group_by([.bench.target, .bench.concurrency, .bench.messages_per_connection, .bench.headers])
  | map({t: .[0].bench.target, c: .[0].bench.concurrency, m: .[0].bench.messages_per_connection,
         h: .[0].bench.headers, n: length,
         tps: (map(.transactions_per_sec) | mean), p50: (map(.latency.p50_us) | mean),
         m50: (map(.message_latency.p50_us) | mean),
         p99: (map(.latency.p99_us) | mean), cpu: (map(.target_cpu_us_per_txn) | mean),
         failed: (map(.failed) | add)})) as $m
| ([.[] | select(.bench.part == "postfix")]
  | group_by([.bench.config, .bench.sessions])
  | map({cfg: .[0].bench.config, s: .[0].bench.sessions, n: length,
         mps: (map(.messages_per_sec) | mean), cpu: (map(.milter_cpu_us_per_msg) | mean),
         busy: (map(.machine_busy_pct) | mean), delivered: (map(.delivered) | add),
         sent: (map(.bench.messages) | add), rejects: (map(.milter_rejects) | add),
         warnings: (map(.milter_warnings) | add), exits: (map(.bench.smtp_source_exit) | unique)})) as $p
| def g(t; c; mm; h): first($m[] | select(.t == t and .c == c and .m == mm and .h == h)) // null;
  def pf(cfg; s): first($p[] | select(.cfg == cfg and .s == s)) // null;
  def mpcs: $mpcs | split(" ") | map(select(. != "") | tonumber);
  def hdrs: $hdrs | split(" ") | map(select(. != "") | tonumber);
  def sess: $sessions | split(" ") | map(select(. != "") | tonumber);
  ["alone", "noop", "policy", "nobounce", "nobounce-unix"] as $setups
| {alone: "Postfix alone", noop: "Postfix + noop-milter --mode all (TCP)",
   policy: "Postfix + noop-milter --mode policy (TCP)", nobounce: "Postfix + nobounce (TCP)",
   "nobounce-unix": "Postfix + nobounce (UNIX socket)"} as $names
|
(if ($m | length) > 0 then
  "## Milter protocol: milter-loadgen, \($conc) connections",
  "",
  "Targets: plain floor = `noop-milter --mode plain`; policy floor = `noop-milter --mode policy`; nobounce = its defaults + `trusted_networks = []`, caches warm; spf-milter 0.6 (\($spf)) on a UNIX socket (\"unix\") and on TCP (\"TCP\", 12 headers only); nobounce on TCP and, as \"nobounce unix\", on a UNIX socket. Mean over \([$m[].n] | max) round(s). Target CPU from `--target-pid` (/proc, 10 ms ticks).",
  "",
  "| msgs/conn | headers | plain tx/s | policy tx/s | nobounce tx/s | nobounce unix tx/s | spf-milter unix tx/s | spf-milter TCP tx/s | nobounce ÷ policy | nobounce unix ÷ spf-milter unix | nobounce ÷ spf-milter TCP | nobounce ÷ plain |",
  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  (mpcs[] as $mm | hdrs[] as $h
    | [g("plain"; $conc; $mm; $h), g("policy"; $conc; $mm; $h), g("nobounce"; $conc; $mm; $h), g("spf-milter"; $conc; $mm; $h), g("spf-milter-inet"; $conc; $mm; $h), g("nobounce-unix"; $conc; $mm; $h)] as [$a, $b, $n, $s, $i, $u]
    | "| \($mm) | \($h) | \($a.tps | d(0)) | \($b.tps | d(0)) | \($n.tps | d(0)) | \($u.tps | d(0)) | \($s.tps | d(0)) | \($i.tps | d(0)) | \(ratio($n.tps; $b.tps) | d(2)) | \(ratio($u.tps; $s.tps) | d(2)) | \(ratio($n.tps; $i.tps) | d(2)) | \(ratio($n.tps; $a.tps) | d(2)) |"),
  "",
  "Target CPU per transaction (µs) and p50 latency:",
  "",
  "| msgs/conn | headers | plain | policy | nobounce | spf-milter unix | spf-milter TCP | nobounce ÷ policy | p50 ms policy / nobounce / spf-milter unix |",
  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
  (mpcs[] as $mm | hdrs[] as $h
    | [g("plain"; $conc; $mm; $h), g("policy"; $conc; $mm; $h), g("nobounce"; $conc; $mm; $h), g("spf-milter"; $conc; $mm; $h), g("spf-milter-inet"; $conc; $mm; $h)] as [$a, $b, $n, $s, $i]
    | "| \($mm) | \($h) | \($a.cpu | d(0)) | \($b.cpu | d(0)) | \($n.cpu | d(0)) | \($s.cpu | d(0)) | \($i.cpu | d(0)) | \(ratio($n.cpu; $b.cpu) | d(2)) | \($b.p50 | ms | d(2)) / \($n.p50 | ms | d(2)) / \($s.p50 | ms | d(2)) |"),
  "",
  "## Latency on one connection (\($lath) headers)",
  "",
  "p50 and p99: per transaction, from MAIL to the final reply. p50 per message: the same plus, for a message that opens its connection, the connection's setup (TCP connect, negotiation, connect and HELO replies): what the MTA waits for per message. It is the fair measure with one message per connection, as the policy floor answers HELO (a round trip counted in the setup) where nobounce never refuses HELO, asks for no HELO reply and checks the HELO identity at MAIL (counted in the transaction).",
  "",
  "| msgs/conn | target | tx/s | p50 ms | p99 ms | p50 per message ms | CPU µs/tx | p50 ÷ policy | p99 ÷ policy | p50 per message ÷ policy |",
  "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  (mpcs[] as $mm | g("policy"; 1; $mm; $lath) as $b
    | ("plain", "policy", "nobounce", "nobounce-unix", "spf-milter", "spf-milter-inet") as $t | g($t; 1; $mm; $lath) as $x | select($x != null)
    | "| \($mm) | \({"spf-milter": "spf-milter unix", "spf-milter-inet": "spf-milter TCP", "nobounce-unix": "nobounce unix"}[$t] // $t) | \($x.tps | d(0)) | \($x.p50 | ms | d(3)) | \($x.p99 | ms | d(3)) | \($x.m50 | ms | d(3)) | \($x.cpu | d(0)) | \(ratio($x.p50; $b.p50) | d(2)) | \(ratio($x.p99; $b.p99) | d(2)) | \(ratio($x.m50; $b.m50) | d(2)) |"),
  ""
else empty end),
(if ($p | length) > 0 then
  "## Postfix \u00d7 smtp-source (one message per session, 12 headers as the milter sees them)",
  "",
  "Messages/s from smtp-source's wall time; the queue drains to smtp-sink between runs. Milter CPU from /proc (10 ms ticks); busy = whole machine during the run. Mean over the rounds.",
  "",
  "| sessions | setup | msg/s | ÷ Postfix alone | ÷ Postfix + noop-milter | milter CPU µs/msg | busy % | delivered / sent | milter rejects | milter warnings | smtp-source exit |",
  "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
  (sess[] as $s | pf("alone"; $s) as $a | pf("noop"; $s) as $o | $setups[] as $c | pf($c; $s) as $x | select($x != null)
    | "| \($s) | \($names[$c]) | \($x.mps | d(0)) | \(ratio($x.mps; $a.mps) | d(2)) | \(ratio($x.mps; $o.mps) | d(2)) | \($x.cpu | d(0)) | \($x.busy | d(0)) | \($x.delivered) / \($x.sent) | \($x.rejects) | \($x.warnings) | \($x.exits | map(tostring) | join(",")) |"),
  "",
  (sess[] as $s | "- Postfix + nobounce ÷ Postfix + noop-milter, \($s) sessions: **\(ratio(pf("nobounce"; $s).mps; pf("noop"; $s).mps) | d(2))**"),
  "",
  (if any($p[]; .s == 1) then
    "One session (smtp-source -s 1): time per message, where a fixed wait shows (~40 ms: Nagle's algorithm on Postfix's side against the milter's delayed ACK, when Postfix sends commands that get no reply over TCP).",
    "",
    "| setup | messages | ms per message | msg/s | milter CPU µs/msg | busy % |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
    ($setups[] as $c | pf($c; 1) as $x | select($x != null)
      | "| \($names[$c]) | \($x.sent) | \(if $x.mps then 1000 / $x.mps else null end | d(2)) | \($x.mps | d(0)) | \($x.cpu | d(0)) | \($x.busy | d(0)) |"),
    ""
  else empty end)
else empty end),
"## Issue 8, \"Done when\" (12 headers, \($conc) connections)",
"",
"| criterion | measured | target | |",
"| --- | ---: | ---: | --- |",
(mpcs[] as $mm | ratio(g("nobounce"; $conc; $mm; 12).tps; g("policy"; $conc; $mm; 12).tps) as $r
  | "| nobounce ÷ policy floor, throughput, \($mm) msg/conn | \($r | d(2)) | ≥ 0.85 | \(check($r; ">="; 0.85)) |"),
(mpcs[] as $mm | ratio(g("nobounce"; 1; $mm; $lath).m50; g("policy"; 1; $mm; $lath).m50) as $r
  | "| nobounce ÷ policy floor, p50 per message (setup included) on one connection, \($mm) msg/conn | \($r | d(2)) | ≤ 1.3 | \(check($r; "<="; 1.3)) |"),
(mpcs[] as $mm | ratio(g("nobounce"; 1; $mm; $lath).p50; g("policy"; 1; $mm; $lath).p50) as $r
  | "| (for reference) nobounce ÷ policy floor, p50 per transaction (MAIL to end of message), one connection, \($mm) msg/conn | \($r | d(2)) | ≤ 1.3 | \(check($r; "<="; 1.3)) |"),
(mpcs[] as $mm | ratio(g("nobounce"; $conc; $mm; 12).cpu; g("policy"; $conc; $mm; 12).cpu) as $r
  | "| nobounce ÷ policy floor, CPU per transaction, \($mm) msg/conn | \($r | d(2)) | ≤ 1.5 | \(check($r; "<="; 1.5)) |"),
(ratio(pf("nobounce"; 20).mps; pf("noop"; 20).mps) as $r
  | "| Postfix + nobounce ÷ Postfix + noop-milter (both TCP), 20 sessions | \($r | d(2)) | ≥ 0.95 | \(check($r; ">="; 0.95)) |"),
(ratio(pf("nobounce-unix"; 20).mps; pf("noop"; 20).mps) as $r | select($r != null)
  | "| (for reference) Postfix + nobounce on a UNIX socket ÷ Postfix + noop-milter on TCP, 20 sessions | \($r | d(2)) | ≥ 0.95 | \(check($r; ">="; 0.95)) |"),
(mpcs[] as $mm | ratio(g("nobounce-unix"; $conc; $mm; 12).tps; g("spf-milter"; $conc; $mm; 12).tps) as $r
  | "| nobounce ÷ spf-milter 0.6, both on a UNIX socket (spf-milter's best case), throughput, \($mm) msg/conn | \($r | d(2)) | ≥ 5 | \(if $r != null then check($r; ">="; 5) elif ($spf | startswith("built")) then "not measured" else $spf end) |"),
(mpcs[] as $mm | ratio(g("nobounce"; $conc; $mm; 12).tps; g("spf-milter"; $conc; $mm; 12).tps) as $r | select($r != null)
  | "| (for reference) nobounce on TCP ÷ spf-milter 0.6 on a UNIX socket, throughput, \($mm) msg/conn | \($r | d(2)) | ≥ 5 | \(check($r; ">="; 5)) |"),
(mpcs[] as $mm | ratio(g("nobounce"; $conc; $mm; 12).tps; g("spf-milter-inet"; $conc; $mm; 12).tps) as $r | select($r != null)
  | "| (for reference) nobounce ÷ spf-milter 0.6 on TCP, throughput, \($mm) msg/conn | \($r | d(2)) | ≥ 5 | \(check($r; ">="; 5)) |"),
"",
"## All measured runs",
"",
([.[] | select(.bench.part == "milter" and .elapsed_secs < $minsecs) | .bench.name] as $short
  | if ($short | length) > 0 then "Shorter than \($minsecs) s: \($short | join(", ")).", "" else empty end),
"| run | completed | secs | tx/s or msg/s | p50 ms | p99 ms | target CPU µs/tx | loadgen CPU µs/tx | DNS queries | bench-dns CPU µs/tx | statuses / errors |",
"| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
(.[] | if .bench.part == "milter" then
    "| \(.bench.name) | \(.completed)/\(.transactions) | \(.elapsed_secs | d(1)) | \(.transactions_per_sec | d(0)) | \(.latency.p50_us | ms | d(3)) | \(.latency.p99_us | ms | d(3)) | \(.target_cpu_us_per_txn | d(0)) | \(.bench.loadgen_cpu_us_per_txn | d(0)) | \(.bench.dns_queries) | \(.bench.dns_server_cpu_us_per_txn | d(0)) | \(.statuses | to_entries | map("\(.key) \(.value)") | join(", "))\(if .failed > 0 then "; errors: \(.errors | to_entries | map("\(.key) \(.value)") | join(", "))" else "" end) |"
  else
    "| \(.bench.name) | \(.delivered)/\(.bench.messages) | \(.secs | d(2)) | \(.messages_per_sec | d(0)) | | | \(.milter_cpu_us_per_msg | d(0)) | | | | smtp-source exit \(.bench.smtp_source_exit)\(if .milter_rejects > 0 then ", \(.milter_rejects) milter rejects" else "" end) |"
  end)
JQ
    echo
    echo "## Notes"
    echo
    if want_part milter; then
        cat <<EOF
- Run sizes: a calibration pass per target and shape (also its warm-up) sets
  --transactions for about $RUN_SECS s; nobounce then replays the measured
  transactions once more (same seed, same senders) so that its caches hold
  every answer (DNS queries during the measured nobounce runs: see the table
  of all runs; 0 means warm). Those passes are in warmup/, each with its
  command (.bench.command).
- Everything shares the machine's $(nproc) cores: milter-loadgen (1 runtime
  thread), the milter, bench-dns (and in part 2 Postfix, smtp-source and
  smtp-sink). A loaded run is CPU-bound on all of them together, so a
  throughput ratio understates the difference in the milter's own cost; the
  CPU columns give that cost (10 ms ticks of /proc/PID/stat).
EOF
    fi
    if [[ $SPF_STATUS == built* ]]; then
        cat <<EOF
- spf-milter 0.6 comes from crates.io: cargo install spf-milter --version
  '^0.6' --root $SPF_MILTER_ROOT (with --locked it does not build with
  current rustc: the time 0.3 of its lock file fails with E0282; unlocked,
  cargo picks a newer time 0.3 and it builds).
- spf-milter 0.6 has no resolver setting: its resolver (domain 0.8's stub
  resolver) reads the nameservers of /etc/resolv.conf, port 53. It runs in a
  private mount namespace (unshare -m) in which configs/spf-milter.resolv.conf
  is bind-mounted on /etc/resolv.conf, pointing at a bench-dns on port 53 of
  a loopback address (with a fixed port bench-dns answers through its small
  forwarder: one more loopback hop per query). spf-milter has no cache: it
  asks for the HELO name and the MAIL FROM domain in every transaction
  (DNS queries and bench-dns CPU columns); nobounce answers from its caches.
- spf-milter TCP: indymilter 0.2 does not set TCP_NODELAY; at end of message
  spf-milter writes the header insertion and the final reply separately, and
  the second write waits for the ACK of the first, which the MTA side delays
  (~40 ms). That, not CPU, is why it reaches only ~25 tx/s per connection on
  TCP; on a UNIX socket there is no such wait. The "Done when" ratio uses the
  UNIX socket, spf-milter's best case.
EOF
    elif [[ -n $SPF_STATUS ]]; then
        echo "- spf-milter 0.6: $SPF_STATUS"
    fi
    if want_part postfix; then
        cat <<EOF
- Postfix part: smtp-source sends configs/smtp-source-message.eml (11 headers
  + Postfix's Received = 12 seen by the milter), one message per session,
  from 127.0.0.1 (checked: nobounce has trusted_networks = [], and the
  sender's SPF record there includes 127.0.0.0/8); in_flow_delay = 0s and the
  queue is emptied (delivered to smtp-sink) before each run. Postfix, the
  milter, smtp-source and smtp-sink share the cores (busy % column).
- Postfix writes each milter command separately and does not set
  TCP_NODELAY on its milter sockets: when it sends commands that get no
  reply (SMFIP_NR_* flags: connect, headers, end of headers) over TCP, the
  next write waits, by Nagle's algorithm, for the ACK of the previous one,
  which the milter's side delays (~40 ms) since it has nothing to send. The
  policy floor and nobounce-on-TCP setups show whether that happens (the
  one-session table, and busy % well below 100); a UNIX socket has no Nagle.
  milter-loadgen does not see this: it sends a run of no-reply commands
  with one write.
EOF
    fi
    if [[ -s $SANITY ]]; then
        echo
        echo "SPF results the milters logged (whole part, warm-ups included):"
        echo
        cat "$SANITY"
    fi
    echo
    echo "## Commands"
    echo
    echo "Exactly as run (binaries copied from target/release to a temporary bin/ first; configurations in configs/):"
    echo
    echo '```sh'
    cat "$COMMANDS"
    echo '```'
}
summary >"$OUT/summary.md"
cat "$OUT/summary.md"
log "results in $OUT"
