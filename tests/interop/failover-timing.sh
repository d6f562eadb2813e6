#!/bin/bash
# Failover and takeover timing, RSPLIB 3.4.4's programs and ours side by side in ONE run of
# the sctp-vm (kernel SCTP, 5 network-namespace hosts on the bridge br0). Every time comes
# from a capture on br0 (dumpcap in the VM, tshark on the host) against the time the signal
# was sent (bash's $EPOCHREALTIME right before the `kill` builtin: no program start between).
# A timing harness, not a test: it prints figures and asserts nothing about speed (not in
# run-all.sh; a slow machine never fails anything).
#
# Hosts: h1 registrar A (10.99.0.11); PE scenarios: h3 PE 1 (.13), h4 PE 2 (.14),
#        h5 pool user (.15); registrar scenarios: h2, h3 registrars B, C; h4 a PE at A.
#
# Scenarios (SCENARIOS=, each run for every implementation in IMPLS=):
#   pe-kill-term  rspterminal fed one line every 100 ms, echo PE 1 serving it SIGKILLed
#   pe-kill-ping  pingpongclient -interval=100, pingpong PE 1 SIGKILLed
#   pe-stop-calc  calcappclient with a long job, CalcApp PE 1 SIGSTOPped (hung)
#   pe-stop-ping  pingpongclient, PE 1 SIGSTOPped
#   pe-stop-term  rspterminal, PE 1 SIGSTOPped
#   reg-kill      registrars A, B, C peered statically, a PE registered at A; A SIGKILLed
#   reg-stop      the same with SIGSTOP (a frozen registrar: no transport signal)
# PE 2 starts after the client is served by PE 1 and has registered before the signal.
#
# Figures (from the capture; "signal" = the kill):
#   reply     signal -> first user message (DATA with a PPID other than ASAP's 11) from
#             PE 2 to the pool user; "never" when none within the wait
#   loss-up   transport loss -> association with PE 2 up. Loss = the first SCTP ABORT or
#             SHUTDOWN chunk between PE 1 and the pool user after the signal (a killed
#             process's kernel sends one of them); up = the COOKIE ACK from PE 2 to the pool
#             user (pe-kill only)
#   unreach   signal -> first ASAP Endpoint Unreachable from the pool user (pe-stop)
#   echo-reply  ASAP Cookie Echo (pool user -> PE 2) -> PE 2's first user message after it
#             (pe-stop: RSPLIB's PE answers only with the next keep-alive)
#   lost      rspterminal: input lines never echoed up to the last echoed line
#   takeover  signal -> first ENRP Init Takeover from a surviving registrar (reg-*)
#   heard-takeover  the last ENRP message from A to B or C before the signal -> that Init
#             Takeover (the timers' bound is max-time-last-heard + max-time-no-response)
#
# Timers (TIMERS=fast|stock, the same for both implementations):
#   fast   registrars: the options of vectors/rsplib-captures/README.md; calcappclient
#          -keepalivetransmissioninterval=1000 -keepalivetimeoutinterval=1000; CalcApp PEs
#          -capkeepalive{transmission,timeout}interval=1000; our pingpongclient and
#          rspterminal -responsetimeout=1000 (RSPLIB's have no such timer)
#   stock  every default (calcappclient 5000/5000, our -responsetimeout 5000)
# Always: pingpongclient -interval=100; calcappclient -jobinterval=0.5 -jobsize=1e9
# (a job outlives the scenario); CalcApp PEs -capcookiemaxtime=0.5 (a cookie exists when PE
# 1 hangs).
#
# Usage (host, after `cargo build --release -p rserpool-mio`):
#   tests/interop/failover-timing.sh [VAR=value ...]
#   RUNS=3 TIMERS=fast (default)  IMPLS="rsplib ours"
#   SCENARIOS="pe-kill-term pe-kill-ping pe-stop-calc pe-stop-ping pe-stop-term reg-kill reg-stop"
#   KILL_WAIT=3 STOP_WAIT=6 (fast; stock: 20) REG_WAIT=8 (s after the signal)
#   STANDBY=<ms>: our pingpongclient and rspterminal with -standbyrefresh=<ms> (default: their
#     own default, 1000; STANDBY=0 turns their standby list off)
#   OUR_LOGLEVEL=1: our programs' -loglevel= (1 = errors, RSPLIB's default and what its
#     programs get here; 3 logs each failover and registration, for diagnosis)
#   CLIENT_WRAP="<command>", REG_WRAP="<command>", PE2_WRAP="<command>": put before our pool
#     user / registrars / PE 2 (diagnosis, e.g. "strace -f -tt -T -o F")
#   BIN=<our release binaries> (default $CARGO_TARGET_DIR/release or target/release)
#   OUT=<dir> (default tests/interop/out/failover-<date>)  VM_TIMEOUT=900  VM_CPU=1
#   ANALYSE=<dir of an earlier run>: only the host analysis of that directory
# Results: OUT/ (one pcapng and the logs per run), OUT/values.tsv (one figure a line),
# OUT/summary.txt (medians per scenario and implementation, with the individual values).
set -u

analyse() { # analyse OUT: values.tsv and summary.txt from the captures (host, tshark)
    local OUT=$1 impl scen timers run t tag pcap
    local values=$OUT/values.tsv summary=$OUT/summary.txt
    : >"$values"
    while read -r impl scen timers run t; do
        tag=$impl-$scen-$timers-$run
        pcap=$OUT/$tag.pcapng
        if [ ! -s "$pcap" ]; then
            printf '%s\t%s\t%s\t%s\t%s\n' "$scen" "$timers" capture "$impl" missing >>"$values"
            continue
        fi
        # One pass over the SCTP packets after the signal; awk computes every figure.
        tshark -r "$pcap" -Y "sctp && frame.time_epoch >= $t - 5" -T fields -E separator=/t \
            -e frame.time_epoch -e ip.src -e ip.dst -e sctp.chunk_type \
            -e sctp.data_payload_proto_id -e asap.message_type -e enrp.message_type \
            2>/dev/null |
            awk -F'\t' -v t="$t" -v scen="$scen" -v timers="$timers" -v impl="$impl" '
            function has(list, v,   n, a, i) { n = split(list, a, ","); for (i = 1; i <= n; i++) if (a[i] == v) return 1; return 0 }
            function user(list,   n, a, i) { n = split(list, a, ","); for (i = 1; i <= n; i++) if (a[i] != "" && a[i] != 11) return 1; return 0 }
            function out(name, v) { printf "%s\t%s\t%s\t%s\t%s\n", scen, timers, name, impl, v }
            function ms(a, b) { return sprintf("%.1f", (a - b) * 1000) }
            {
                at = $1; src = $2; dst = $3
                if (at < t) {
                    if (src == "10.99.0.11" && (dst == "10.99.0.12" || dst == "10.99.0.13") && $7 != "") heard = at
                    next
                }
                pe1pu = (src == "10.99.0.13" && dst == "10.99.0.15") || (src == "10.99.0.15" && dst == "10.99.0.13")
                if (loss == "" && pe1pu && (has($4, 6) || has($4, 7))) loss = at
                if (up == "" && src == "10.99.0.14" && dst == "10.99.0.15" && has($4, 11)) up = at
                if (reply == "" && src == "10.99.0.14" && dst == "10.99.0.15" && user($5)) reply = at
                if (unreach == "" && src == "10.99.0.15" && has($6, 9)) unreach = at
                if (echo == "" && src == "10.99.0.15" && dst == "10.99.0.14" && has($6, 12)) echo = at
                if (echo != "" && echoreply == "" && at > echo && src == "10.99.0.14" && dst == "10.99.0.15" && user($5)) echoreply = at
                if (takeover == "" && (src == "10.99.0.12" || src == "10.99.0.13") && has($7, 7)) takeover = at
            }
            END {
                if (scen ~ /^pe-/) {
                    out("reply", reply == "" ? "never" : ms(reply, t))
                }
                if (scen ~ /^pe-kill/) {
                    out("loss-up", (loss == "" || up == "") ? "none" : ms(up, loss))
                }
                if (scen ~ /^pe-stop/) {
                    out("unreach", unreach == "" ? "never" : ms(unreach, t))
                    if (echo != "") out("echo-reply", echoreply == "" ? "never" : ms(echoreply, echo))
                }
                if (scen ~ /^reg-/) {
                    out("takeover", takeover == "" ? "never" : ms(takeover, t))
                    if (heard != "" && takeover != "") out("heard-takeover", ms(takeover, heard))
                }
            }' >>"$values"
        if [ "$scen" = pe-kill-term ] || [ "$scen" = pe-stop-term ]; then
            local last lost
            last=$(grep -o 'line [0-9]*' "$OUT/$tag.term" 2>/dev/null | awk '{ print $2 }' | sort -n | tail -1)
            lost=$(grep -o 'line [0-9]*' "$OUT/$tag.term" 2>/dev/null | awk '{ print $2 }' | sort -nu |
                awk -v last="${last:-0}" '{ seen[$1] = 1 } END { n = 0; for (i = 1; i <= last; i++) if (!(i in seen)) n++; print n }')
            printf '%s\t%s\t%s\t%s\t%s\n' "$scen" "$timers" lost "$impl" "${lost:-0}" >>"$values"
        fi
    done <"$OUT/signals.txt"
    # Medians (numeric values only; "never"/"none" counted) per scenario, timers, figure, impl.
    sort -t$'\t' -k1,1 -k2,2 -k3,3 -k4,4 "$values" | awk -F'\t' '
        function flush(   n, i, j, v, med, tmp) {
            if (key == "") return
            n = 0
            for (i = 1; i <= cnt; i++) if (vals[i] ~ /^-?[0-9.]+$/) num[++n] = vals[i] + 0
            for (i = 2; i <= n; i++) { v = num[i]; for (j = i - 1; j >= 1 && num[j] > v; j--) num[j + 1] = num[j]; num[j + 1] = v }
            if (n == 0) med = vals[1]
            else if (n % 2) med = num[(n + 1) / 2]
            else med = (num[n / 2] + num[n / 2 + 1]) / 2
            if (n > 0 && n < cnt) med = med " (" cnt - n " of " cnt " no value)"
            printf "%-14s %-6s %-11s %-7s median %-10s values %s\n", s, tm, f, im, med, list
            delete num
        }
        { k = $1 SUBSEP $2 SUBSEP $3 SUBSEP $4
          if (k != key) { flush(); key = k; s = $1; tm = $2; f = $3; im = $4; cnt = 0; list = "" }
          vals[++cnt] = $5; list = list (cnt > 1 ? " " : "") $5 }
        END { flush() }' >"$summary"
    cat "$summary"
}

if [ "${1:-}" != "--in-vm" ]; then
    here=$(cd "$(dirname "$0")/../.." && pwd)
    for a in "$@"; do
        case $a in
        ANALYSE=*) analyse "${a#ANALYSE=}"; exit 0 ;;
        [A-Z]*=*) export "${a?}" ;;
        *) echo "usage: $0 [VAR=value ...]" >&2; exit 2 ;;
        esac
    done
    BIN=${BIN:-${CARGO_TARGET_DIR:-$here/target}/release}
    VM=${SCTP_VM:-$(cd "$here/.." && pwd)/shared/tools/sctp-vm/sctp-vm}
    [ -x "$VM" ] || VM=/work/shared/tools/sctp-vm/sctp-vm
    OUT=${OUT:-$here/tests/interop/out/failover-$(date +%Y%m%d-%H%M%S)}
    mkdir -p "$OUT"
    cd "$here"
    taskset -c "${VM_CPU:-1}" "$VM" run --net=ns:5 --mem=2048 --timeout="${VM_TIMEOUT:-900}" -- \
        env BIN="$BIN" OUT="$OUT" "$@" bash tests/interop/failover-timing.sh --in-vm 2>&1 |
        tee "$OUT/console.txt"
    analyse "$OUT"
    echo "results in $OUT"
    exit 0
fi

# --- inside the VM ---------------------------------------------------------------------
BIN=${BIN:?} OUT=${OUT:?}
IMPLS=${IMPLS:-"rsplib ours"}
SCENARIOS=${SCENARIOS:-"pe-kill-term pe-kill-ping pe-stop-calc pe-stop-ping pe-stop-term reg-kill reg-stop"}
RUNS=${RUNS:-3}
TIMERS=${TIMERS:-fast}
OUR_LOGLEVEL=${OUR_LOGLEVEL:-1}
KILL_WAIT=${KILL_WAIT:-3}
REG_WAIT=${REG_WAIT:-8}
A=10.99.0.11 B=10.99.0.12 C=10.99.0.13
case $TIMERS in
fast)
    STOP_WAIT=${STOP_WAIT:-6}
    REG_OPTS=(-serverannouncecycle=1000 -endpointkeepalivetransmissioninterval=2000
        -endpointkeepalivetimeoutinterval=2000 -maxbadpereports=1 -peerheartbeatcycle=1000
        -peermaxtimelastheard=3000 -peermaxtimenoresponse=2000 -takeoverexpiryinterval=3000
        -mentordiscoverytimeout=2000)
    CALC_OPTS=(-keepalivetransmissioninterval=1000 -keepalivetimeoutinterval=1000)
    CAP_OPTS=(-capkeepalivetransmissioninterval=1000 -capkeepalivetimeoutinterval=1000)
    RESP_OPTS=(-responsetimeout=1000)
    ;;
stock)
    STOP_WAIT=${STOP_WAIT:-20}
    REG_OPTS=() CALC_OPTS=() CAP_OPTS=() RESP_OPTS=()
    ;;
*) echo "TIMERS=fast|stock" >&2; exit 2 ;;
esac
touch "$OUT/signals.txt"
# Sleep without starting a program: a read with a timeout on a FIFO nobody writes to
# (/dev/fd is missing in User-Mode Linux, so no `<(:)`).
mkfifo /tmp/fo-never
exec {never}<>/tmp/fo-never
nap() { read -r -t "$1" -u "$never" || true; }

# Every starter execs: $! is then the program itself (ip netns exec and stdbuf exec too),
# so SIGSTOP/SIGKILL reach it and not a shell.
reg() { # reg IMPL HOST IP [options]: a registrar
    local impl=$1 host=$2 ip=$3
    shift 3
    case $impl in
    rsplib) exec ip netns exec "$host" rspregistrar -asap="$ip:3863" -enrp="$ip:9901" \
        -asapannounce=off -enrpannounce=off -loglevel=1 "${REG_OPTS[@]}" "$@" ;;
    # shellcheck disable=SC2086 # REG_WRAP is a command line: split on purpose
    ours) exec ip netns exec "$host" ${REG_WRAP:-} "$BIN/rspregistrar" -transport=sctp -asap="$ip:3863" \
        -enrp="$ip:9901" -asapannounce=off -enrpannounce=off -loglevel="$OUR_LOGLEVEL" -logcolor=off \
        -quiet "${REG_OPTS[@]}" "$@" ;;
    esac
}

pe() { # pe IMPL HOST SERVICE-OPTIONS...: a PE registered at registrar A
    local impl=$1 host=$2
    shift 2
    case $impl in
    rsplib) exec ip netns exec "$host" rspserver "$@" -registrar=$A:3863 -loglevel=1 ;;
    # shellcheck disable=SC2086 # PE_WRAP is a command line: split on purpose
    ours) exec ip netns exec "$host" ${PE_WRAP:-} "$BIN/rspserver" "$@" -transport=sctp \
        -registrar=$A:3863 -asapannounce=off -quiet -loglevel="$OUR_LOGLEVEL" -logcolor=off ;;
    esac
}

client() { # client IMPL PROGRAM [options]: a pool user on h5
    local impl=$1 prog=$2
    shift 2
    case $impl in
    rsplib) exec ip netns exec h5 stdbuf -oL "$prog" "$@" -registrar=$A:3863 -loglevel=1 ;;
    # shellcheck disable=SC2086 # CLIENT_WRAP is a command line: split on purpose
    ours) exec ip netns exec h5 ${CLIENT_WRAP:-} "$BIN/$prog" "$@" -transport=sctp \
        -registrar=$A:3863 -asapannounce=off -loglevel="$OUR_LOGLEVEL" -logcolor=off ;;
    esac
}

ours_resp() { # ours_resp IMPL: our -responsetimeout= (RSPLIB's clients have no such timer)
    # and, with STANDBY=MS, our -standbyrefresh= (the standby list; RSPLIB has none either)
    [ "$1" = ours ] && echo "${RESP_OPTS[@]}" ${STANDBY:+-standbyrefresh=$STANDBY}
}

capture() { # capture TAG: dumpcap on br0 in the background
    dumpcap -q -i br0 -w "$OUT/$1.pcapng" >/dev/null 2>&1 &
    CAP=$!
    nap 1.5
}

stop_all() { # stop_all PID...: SIGKILL (a graceful end takes RSPLIB's PEs up to 20 s)
    local p
    for p in "$@"; do kill -s KILL "$p" 2>/dev/null; done
    for p in "$@"; do wait "$p" 2>/dev/null; done
}

feed() { # feed N [K SIG PID RECORD]: one line every 100 ms (no program start per line);
    # right before line K, send SIG to PID and append "RECORD <time>" to signals.txt: line
    # K is then in flight (sent to PE 1 before the pool user sees the loss, or to PE 2)
    local i t
    for ((i = 1; i <= $1; i++)); do
        if [ "$i" = "${2:-}" ]; then
            t=$EPOCHREALTIME
            kill -s "$3" "$4"
            echo "$5 $t" >>"$OUT/signals.txt"
        fi
        echo "line $i" || return
        nap 0.1
    done
}

pe_scenario() { # pe_scenario IMPL SCEN RUN
    local impl=$1 scen=$2 run=$3 tag=$1-$2-$TIMERS-$3 sig wait svc T F=
    case $scen in
    pe-kill-*) sig=KILL wait=$KILL_WAIT ;;
    *) sig=STOP wait=$STOP_WAIT ;;
    esac
    case $scen in
    *-term) svc=(-echo) ;;
    *-ping) svc=(-pingpong) ;;
    *-calc) svc=(-calcapp -capcookiemaxtime=0.5 -capvector=/tmp/fo-pe.vec -capscalar=/tmp/fo-pe.sca "${CAP_OPTS[@]}") ;;
    esac
    reg "$impl" h1 $A >"$OUT/$tag.rega" 2>&1 &
    local RA=$!
    nap 1
    pe "$impl" h3 "${svc[@]}" >"$OUT/$tag.pe1" 2>&1 &
    local P1=$!
    nap 1.5
    capture "$tag"
    case $scen in
    *-term)
        rm -f /tmp/fo-in
        mkfifo /tmp/fo-in
        # The feeder itself signals PE 1 right before line 35 (~3.5 s: PE 2 has
        # registered), so that line is in flight: RSPLIB's rspterminal loses it.
        feed $(((5 + wait) * 10)) 35 "$sig" $P1 "$impl $scen $TIMERS $run" >/tmp/fo-in &
        F=$!
        client "$impl" rspterminal $(ours_resp "$impl") </tmp/fo-in >"$OUT/$tag.term" 2>"$OUT/$tag.client" &
        ;;
    *-ping) client "$impl" pingpongclient -interval=100 $(ours_resp "$impl") >"$OUT/$tag.term" 2>"$OUT/$tag.client" & ;;
    *-calc) client "$impl" calcappclient -jobinterval=0.5 -jobsize=1000000000 "${CALC_OPTS[@]}" \
        -vector="$OUT/$tag.vec" -scalar="$OUT/$tag.sca" >"$OUT/$tag.term" 2>"$OUT/$tag.client" & ;;
    esac
    T=$!
    nap 1.5
    PE_WRAP=${PE2_WRAP:-} pe "$impl" h4 "${svc[@]}" >"$OUT/$tag.pe2" 2>&1 &
    local P2=$!
    nap 2
    if [ -z "$F" ]; then
        local t=$EPOCHREALTIME
        kill -s "$sig" $P1
        echo "$impl $scen $TIMERS $run $t" >>"$OUT/signals.txt"
    fi
    nap "$wait"
    nap 0.5
    # RSPLIB's rspterminal does not exit at the end of its input.
    stop_all $T $F $P1 $P2 $RA
    kill $CAP
    wait $CAP 2>/dev/null
}

reg_scenario() { # reg_scenario IMPL SCEN RUN
    local impl=$1 scen=$2 run=$3 tag=$1-$2-$TIMERS-$3 sig
    case $scen in reg-kill) sig=KILL ;; *) sig=STOP ;; esac
    reg "$impl" h1 $A -peer=$B:9901 -peer=$C:9901 >"$OUT/$tag.rega" 2>&1 &
    local RA=$!
    reg "$impl" h2 $B -peer=$A:9901 -peer=$C:9901 >"$OUT/$tag.regb" 2>&1 &
    local RB=$!
    reg "$impl" h3 $C -peer=$A:9901 -peer=$B:9901 >"$OUT/$tag.regc" 2>&1 &
    local RC=$!
    nap 2
    pe "$impl" h4 -echo >"$OUT/$tag.pe1" 2>&1 &
    local P1=$!
    nap 3.5
    capture "$tag"
    local t=$EPOCHREALTIME
    kill -s "$sig" $RA
    echo "$impl $scen $TIMERS $run $t" >>"$OUT/signals.txt"
    nap "$REG_WAIT"
    stop_all $P1 $RB $RC $RA
    kill $CAP
    wait $CAP 2>/dev/null
}

echo "# VM $(uname -r); RSPLIB $(dpkg-query -W -f '${Version}' rsplib-registrar 2>/dev/null); ours $BIN; TIMERS=$TIMERS RUNS=$RUNS"
for run in $(seq 1 "$RUNS"); do
    for scen in $SCENARIOS; do
        for impl in $IMPLS; do
            echo "== $impl $scen $TIMERS run $run ($(date +%T))"
            case $scen in
            pe-*) pe_scenario "$impl" "$scen" "$run" ;;
            reg-*) reg_scenario "$impl" "$scen" "$run" ;;
            esac
        done
    done
done
echo "# done $(date +%T)"
