#!/bin/bash
# What a registrar holding N PEs has allocated, by allocation site, in the sctp-vm (or on any
# host with kernel SCTP): `rspregistrar` under heaptrack is killed with SIGKILL while
# `rspload -mode=keepalive-only` holds its PEs, so what heaptrack reports as not freed is
# exactly what was live. Benchmark, not a test: it asserts nothing.
#
#   taskset -c 1 ../shared/tools/sctp-vm/sctp-vm run --net=lo --mem=3072 -- \
#       env OUT=benches/out/heap-live B=target/release N=10000 bash benches/vm-heap-live.sh
#   heaptrack_print -f benches/out/heap-live/registrar.zst --flamegraph-cost-type leaked \
#       -F benches/out/heap-live/leaked.stacks      # then sum the stacks by frame
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-benches/out/heap-live}
B=${B:-target/release}
N=${N:-10000}
mkdir -p "$OUT"
ulimit -n 65536
heaptrack -o "$OUT/registrar" "$B/rspregistrar" -asap=127.0.0.1:3863 -enrp=127.0.0.1:9901 \
    -asapannounce=off -enrpannounce=off -minaddressscope=loopback -loglevel=1 -quiet \
    >"$OUT/ht.log" 2>&1 &
sleep 3
rp=$(pgrep -f "^$B/rspregistrar" | head -1)
"$B/rspload" -registrar=127.0.0.1:3863 -asapannounce=off -loglevel=1 -pes="$N" \
    -mode=keepalive-only -duration=8 -registrarpid="$rp" >"$OUT/rspload.txt" 2>&1 &
lp=$!
sleep 9
kill -KILL "$rp"
wait $lp
grep -E "^(registrations|registrar_rss|registrar_anon)" "$OUT/rspload.txt"
sleep 2
wait
