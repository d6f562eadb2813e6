#!/bin/bash
# Two registrar builds alternately under the same resolution load over TCP on the host:
# rspload's resolutions/s and registrar CPU per resolution (from /proc/PID/stat), ROUNDS
# times each. Benchmark, not a test: it asserts nothing.
#
#   benches/host-ab-resolve.sh A_REGISTRAR B_REGISTRAR      (PES=1000 ROUNDS=5 OUT=...)
#
# The load generator is target/release/rspload; ports 13863/19901 on 127.0.0.1.
set -eu
cd "$(dirname "$0")/.."
A=${1:?A_REGISTRAR}
B=${2:?B_REGISTRAR}
OUT=${OUT:-benches/out/host-ab-resolve}
PES=${PES:-1000}
ROUNDS=${ROUNDS:-5}
mkdir -p "$OUT"
for round in $(seq "$ROUNDS"); do
    for v in a b; do
        if [ $v = a ]; then reg=$A; else reg=$B; fi
        "$reg" -asap=127.0.0.1:13863 -enrp=127.0.0.1:19901 -asapannounce=off -enrpannounce=off \
            -minaddressscope=loopback -loglevel=1 -quiet >/dev/null 2>&1 &
        rp=$!
        sleep 1
        target/release/rspload -registrar=127.0.0.1:13863 -asapannounce=off -loglevel=1 \
            -pes="$PES" -mode=resolve -duration=8 -registrarpid=$rp >"$OUT/$v-$round.txt" 2>&1
        kill $rp
        wait $rp 2>/dev/null || true
        echo "$v-$round $(awk '$1 ~ /^(resolutions_per_s|registrar_cpu_per_resolution|pes_lost)$/ \
            { printf "%s=%s ", $1, $2 }' "$OUT/$v-$round.txt")"
    done
done
