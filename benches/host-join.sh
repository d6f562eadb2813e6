#!/bin/bash
# ENRP join on the host, TCP mapping over loopback: registrar A holds PES PEs (registered by
# rspload, one association each); registrar B starts with A as its static peer and is timed
# from its start (taken just before exec) to its "start-up done: N PEs downloaded from
# mentor" log line (the machine's MentorSyncComplete event: the whole handlespace is in).
# Repeated RUNS times; B's handlespace is checked with hsdump after the last run.
#
#   benches/host-join.sh [OUTDIR]        env: BIN, PES (10000), RUNS (5)
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$here/target}/release}
OUT=${1:-$here/benches/out/join-$(date +%Y%m%d-%H%M%S)}
PES=${PES:-10000}
RUNS=${RUNS:-5}
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"
# Below the ephemeral range (32768-): 10,000 client connections use many of those.
base=$(( 21000 + $$ % 5000 * 2 ))
A_ASAP=$base A_ENRP=$((base + 1)) B_ASAP=$((base + 2)) B_ENRP=$((base + 3))
common=(-transport=tcp -asapannounce=off -enrpannounce=off -minaddressscope=loopback -quiet)

"$BIN/rspregistrar" "${common[@]}" -asap=127.0.0.1:$A_ASAP -enrp=127.0.0.1:$A_ENRP \
    -loglevel=1 >"$OUT/a.log" 2>&1 &
A=$!
sleep 0.5
"$BIN/rspload" -transport=tcp -registrar=127.0.0.1:$A_ASAP -asapannounce=off -pes="$PES" \
    -mode=keepalive-only -duration=3600 -loglevel=1 >"$OUT/load.txt" 2>&1 &
L=$!

count() { # count ENRP_PORT: PEs in the handlespace of the registrar there
    "$BIN/hsdump" -transport=tcp -timeout=20000 "127.0.0.1:$1" 2>/dev/null |
        sed -n 's/^Handlespace: .*, \([0-9]*\) PEs.*/\1/p' | head -1
}
for _ in $(seq 1 120); do
    sleep 1
    n=$(count $A_ENRP)
    [ "${n:-0}" -ge "$PES" ] && break
done
echo "registrar A holds ${n:-0} PEs" | tee "$OUT/join.txt"

ms() { # ms ISO-TIMESTAMP: milliseconds since the epoch
    date -d "$1" +%s%N | awk '{ printf "%.3f", $1 / 1e6 }'
}
for r in $(seq 1 "$RUNS"); do
    t0=$(date +%s%N)
    "$BIN/rspregistrar" "${common[@]}" -asap=127.0.0.1:$B_ASAP -enrp=127.0.0.1:$B_ENRP \
        -peer=127.0.0.1:$A_ENRP -loglevel=3 -logcolor=off >"$OUT/b-$r.log" 2>&1 &
    B=$!
    for _ in $(seq 1 200); do
        grep -q 'start-up done' "$OUT/b-$r.log" && break
        sleep 0.05
    done
    line=$(grep -m1 'start-up done' "$OUT/b-$r.log")
    ts=$(echo "$line" | awk '{ print $1 }')
    if [ -n "$ts" ]; then
        awk -v a="$(ms "$ts")" -v b="$t0" -v r="$r" -v l="$line" \
            'BEGIN { printf "run %d: start -> whole handlespace %.1f ms (%s)\n", r, a - b / 1e6, substr(l, index(l, "start-up")) }' |
            tee -a "$OUT/join.txt"
    else
        echo "run $r: no start-up line" | tee -a "$OUT/join.txt"
    fi
    if [ "$r" = "$RUNS" ]; then
        echo "registrar B holds $(count $B_ENRP) PEs" | tee -a "$OUT/join.txt"
    fi
    kill $B
    wait $B 2>/dev/null
    sleep 1
done
kill -INT $L
wait $L
kill $A
wait $A 2>/dev/null
awk '/^run .*ms/ { print $7 }' "$OUT/join.txt" | sort -n |
    awk '{ v[NR] = $1 } END { if (NR) printf "median %.1f ms of %d runs (min %.1f, max %.1f)\n", v[int((NR + 1) / 2)], NR, v[1], v[NR] }' |
    tee -a "$OUT/join.txt"
