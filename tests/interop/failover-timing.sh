#!/bin/bash
# Failover and takeover timing, RSPLIB's programs and ours side by side, over kernel SCTP in
# the sctp-vm (5 network-namespace hosts on one bridge). Every time is taken from a capture
# on br0 (dumpcap in the VM, tshark on the host) against the time the signal was sent
# (bash's $EPOCHREALTIME right before the `kill` builtin: no program start in between).
#
#   hosts: h1 registrar A (10.99.0.11), h2 registrar B (.12), h3 PE 1 (.13),
#          h4 PE 2 (.14), h5 pool user (.15)
#
# Scenarios (stock timers, both implementations):
#   pe-kill   rspterminal fed one line every 100 ms; PE 1 (serving it) is SIGKILLed:
#             lines lost, kill -> first echo from PE 2
#   pe-stop   the same with SIGSTOP (a hung PE): stop -> first echo from PE 2
#   reg-kill  registrars A and B are static peers, PE 1 registered at A; A is SIGKILLed:
#             kill -> B's first ENRP Init Takeover
#   reg-stop  the same with SIGSTOP (a frozen registrar)
#
# Usage (host): tests/interop/failover-timing.sh [VAR=value ...]
#   BIN=<our release binaries> (default target/release or $CARGO_TARGET_DIR/release)
#   IMPLS="rsplib ours"  SCENARIOS="pe-kill pe-stop reg-kill reg-stop"  RUNS=1
#   PE_WAIT=15 (s after the PE signal)  REG_WAIT=20 (s after the registrar signal)
# Results: tests/interop/out/failover-<date>/ (pcaps, logs, terminal output, summary.txt).
# A timing harness, not a test: it prints figures and asserts nothing about speed.
set -u

if [ "${1:-}" != "--in-vm" ]; then
    here=$(cd "$(dirname "$0")/../.." && pwd)
    BIN=${BIN:-${CARGO_TARGET_DIR:-$here/target}/release}
    VM=${SCTP_VM:-$(cd "$here/.." && pwd)/shared/tools/sctp-vm/sctp-vm}
    [ -x "$VM" ] || VM=/work/shared/tools/sctp-vm/sctp-vm
    OUT=${OUT:-$here/tests/interop/out/failover-$(date +%Y%m%d-%H%M%S)}
    mkdir -p "$OUT"
    cd "$here"
    taskset -c "${VM_CPU:-1}" "$VM" run --net=ns:5 --mem=2048 --timeout="${VM_TIMEOUT:-900}" -- \
        env BIN="$BIN" OUT="$OUT" "$@" bash tests/interop/failover-timing.sh --in-vm 2>&1 |
        tee "$OUT/console.txt"
    # --- analysis on the host -------------------------------------------------------------
    summary=$OUT/summary.txt
    : >"$summary"
    while read -r impl scen run signal_at rest; do
        tag=$impl-$scen-$run
        pcap=$OUT/$tag.pcapng
        [ -s "$pcap" ] || { echo "$tag: no capture" | tee -a "$summary"; continue; }
        case $scen in
        pe-*)
            # First user data (not ASAP, PPID 11) from PE 2 to the pool user after the signal.
            first=$(tshark -r "$pcap" -Y "ip.src==10.99.0.14 && ip.dst==10.99.0.15 && sctp.data_payload_proto_id != 11 && frame.time_epoch >= $signal_at" \
                -T fields -e frame.time_epoch 2>/dev/null | head -1)
            sent=$(grep -c '^line ' "$OUT/$tag.in" 2>/dev/null)
            got=$(grep -o 'line [0-9]*' "$OUT/$tag.term" 2>/dev/null | sort -u | wc -l)
            last=$(grep -o 'line [0-9]*' "$OUT/$tag.term" 2>/dev/null | awk '{ print $2 }' | sort -n | tail -1)
            lost=$(grep -o 'line [0-9]*' "$OUT/$tag.term" 2>/dev/null | awk '{ print $2 }' | sort -nu |
                awk -v last="${last:-0}" '{ seen[$1] = 1 } END { n = 0; for (i = 1; i <= last; i++) if (!(i in seen)) { n++; l = l " " i } print n (n ? " (" substr(l, 2) ")" : "") }')
            if [ -n "$first" ]; then
                d=$(awk -v a="$first" -v b="$signal_at" 'BEGIN { printf "%.1f", (a - b) * 1000 }')
                echo "$tag: signal -> first echo from PE 2 $d ms; lines sent $sent, echoed $got, lost before the last echo: $lost" | tee -a "$summary"
            else
                echo "$tag: no echo from PE 2 within the wait (never failed over); lines sent $sent, echoed $got, last echoed ${last:-none}" | tee -a "$summary"
            fi
            ;;
        reg-*)
            # ENRP Init Takeover = message type 7, from registrar B.
            first=$(tshark -r "$pcap" -Y "ip.src==10.99.0.12 && enrp.message_type == 7 && frame.time_epoch >= $signal_at" \
                -T fields -e frame.time_epoch 2>/dev/null | head -1)
            if [ -n "$first" ]; then
                d=$(awk -v a="$first" -v b="$signal_at" 'BEGIN { printf "%.1f", (a - b) * 1000 }')
                echo "$tag: signal -> Init Takeover from registrar B $d ms" | tee -a "$summary"
            else
                echo "$tag: no Init Takeover within the wait" | tee -a "$summary"
            fi
            ;;
        esac
    done <"$OUT/signals.txt"
    echo "results in $OUT"
    exit 0
fi

# --- inside the VM ---------------------------------------------------------------------
BIN=${BIN:?} OUT=${OUT:?}
IMPLS=${IMPLS:-"rsplib ours"}
SCENARIOS=${SCENARIOS:-"pe-kill pe-stop reg-kill reg-stop"}
RUNS=${RUNS:-1}
PE_WAIT=${PE_WAIT:-15}
REG_WAIT=${REG_WAIT:-20}
A=10.99.0.11 B=10.99.0.12
: >"$OUT/signals.txt"
exec {never}<> <(:)
nap() { read -r -t "$1" -u "$never" || true; } # sleep without starting a program

reg() { # reg IMPL HOST IP [options]: a registrar
    local impl=$1 host=$2 ip=$3
    shift 3
    case $impl in
    rsplib) ip netns exec "$host" rspregistrar -asap="$ip:3863" -enrp="$ip:9901" \
        -asapannounce=off -enrpannounce=off -loglevel=1 "$@" ;;
    ours) ip netns exec "$host" "$BIN/rspregistrar" -transport=sctp -asap="$ip:3863" \
        -enrp="$ip:9901" -asapannounce=off -enrpannounce=off -loglevel=3 -logcolor=off -quiet "$@" ;;
    esac
}

pe() { # pe IMPL HOST: an echo PE registered at registrar A
    case $1 in
    rsplib) ip netns exec "$2" rspserver -echo -registrar=$A:3863 -loglevel=1 ;;
    ours) ip netns exec "$2" "$BIN/rspserver" -echo -transport=sctp -registrar=$A:3863 \
        -asapannounce=off -quiet -loglevel=3 -logcolor=off ;;
    esac
}

term() { # term IMPL: rspterminal on h5 (stdin: the lines)
    case $1 in
    rsplib) ip netns exec h5 stdbuf -oL rspterminal -registrar=$A:3863 -loglevel=1 ;;
    ours) ip netns exec h5 "$BIN/rspterminal" -transport=sctp -registrar=$A:3863 \
        -asapannounce=off -loglevel=3 -logcolor=off ;;
    esac
}

capture() { # capture TAG: dumpcap on br0 in the background
    dumpcap -q -i br0 -w "$OUT/$1.pcapng" >/dev/null 2>&1 &
    CAP=$!
    nap 2
}

stop_all() {
    for p in "$@"; do kill -CONT "$p" 2>/dev/null; kill "$p" 2>/dev/null; done
    for p in "$@"; do wait "$p" 2>/dev/null; done
}

feed() { # feed N: one line every 100 ms (no program start per line)
    for i in $(seq 1 "$1"); do
        echo "line $i"
        nap 0.1
    done
}

pe_scenario() { # pe_scenario IMPL SCEN RUN SIGNAL
    local impl=$1 scen=$2 run=$3 sig=$4 tag=$1-$2-$3
    reg "$impl" h1 $A >"$OUT/$tag.rega" 2>&1 &
    local RA=$!
    nap 1
    pe "$impl" h3 >"$OUT/$tag.pe1" 2>&1 &
    local P1=$!
    nap 2
    capture "$tag"
    local lines=$(( (5 + PE_WAIT) * 10 ))
    feed $lines | tee "$OUT/$tag.in" | term "$impl" >"$OUT/$tag.term" 2>"$OUT/$tag.term.err" &
    local T=$!
    nap 2
    pe "$impl" h4 >"$OUT/$tag.pe2" 2>&1 &
    local P2=$!
    nap 3
    local t=$EPOCHREALTIME
    kill "-$sig" $P1
    echo "$impl $scen $run $t" >>"$OUT/signals.txt"
    nap "$PE_WAIT"
    nap 1
    # rspterminal does not exit at the end of its input (RSPLIB's).
    kill $T 2>/dev/null
    stop_all $P1 $P2 $RA
    kill $CAP
    wait $CAP 2>/dev/null
    nap 1
}

reg_scenario() { # reg_scenario IMPL SCEN RUN SIGNAL
    local impl=$1 scen=$2 run=$3 sig=$4 tag=$1-$2-$3
    reg "$impl" h1 $A -peer=$B:9901 >"$OUT/$tag.rega" 2>&1 &
    local RA=$!
    reg "$impl" h2 $B -peer=$A:9901 >"$OUT/$tag.regb" 2>&1 &
    local RB=$!
    nap 2
    pe "$impl" h3 >"$OUT/$tag.pe1" 2>&1 &
    local P1=$!
    nap 6
    capture "$tag"
    local t=$EPOCHREALTIME
    kill "-$sig" $RA
    echo "$impl $scen $run $t" >>"$OUT/signals.txt"
    nap "$REG_WAIT"
    stop_all $P1 $RB $RA
    kill $CAP
    wait $CAP 2>/dev/null
    nap 1
}

echo "# VM $(uname -r); RSPLIB $(dpkg-query -W -f '${Version}' rsplib-registrar 2>/dev/null); ours $BIN"
for run in $(seq 1 "$RUNS"); do
    for scen in $SCENARIOS; do
        for impl in $IMPLS; do
            echo "== $impl $scen run $run"
            case $scen in
            pe-kill) pe_scenario "$impl" "$scen" "$run" KILL ;;
            pe-stop) pe_scenario "$impl" "$scen" "$run" STOP ;;
            reg-kill) reg_scenario "$impl" "$scen" "$run" KILL ;;
            reg-stop) reg_scenario "$impl" "$scen" "$run" STOP ;;
            esac
        done
    done
done
