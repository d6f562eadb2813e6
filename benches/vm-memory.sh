#!/bin/bash
# Where a registrar's memory goes, in the sctp-vm (or on any host with kernel SCTP): our
# registrar holding N PEs of `rspload -mode=keepalive-only`. Benchmark, not a test: it
# asserts nothing.
#
#   taskset -c 1 ../shared/tools/sctp-vm/sctp-vm run --net=lo --mem=3072 -- \
#       env MODE=stats OUT=benches/out/mem B=target/release N=10000 bash benches/vm-memory.sh
#
# MODE=stats: its /proc status before and during (VmRSS, RssAnon: before.txt, during.txt),
#   smaps.txt, and glibc's malloc_stats / malloc_info through gdb (in use against taken
#   from the system, and the free chunks left in the heap; the registrar prints them on its
#   own stderr/stdout: reg.log).
# MODE=live: the registrar runs under heaptrack and is killed with SIGKILL while the PEs
#   are held, so what heaptrack reports as not freed is exactly what was live:
#     heaptrack_print -f OUT/registrar.zst --flamegraph-cost-type leaked -F OUT/leaked.stacks
#   (then sum the stacks by their deepest frame of ours).
# Both: rspload.txt (registrar_rss_per_pe, registrar_anon_per_pe). The load runs 20 s, so
# that it still holds its PEs when the figures are taken (at 12 s; SIGKILL at 9 s).
# On a host without kernel SCTP the same script measures the TCP mapping (N at most the
# open-file hard limit; the `ulimit -n` above it fails and is ignored).
set -u
cd "$(dirname "$0")/.."
MODE=${MODE:-stats}
OUT=${OUT:-benches/out/memory-$MODE}
B=${B:-target/release}
N=${N:-10000}
mkdir -p "$OUT"
ulimit -n 65536
reg=("$B/rspregistrar" -asap=127.0.0.1:3863 -enrp=127.0.0.1:9901 -asapannounce=off
    -enrpannounce=off -minaddressscope=loopback -loglevel=1 -quiet)
case $MODE in
live)
    heaptrack -o "$OUT/registrar" "${reg[@]}" >"$OUT/reg.log" 2>&1 &
    sleep 3
    rp=$(pgrep -f "^$B/rspregistrar" | head -1) ;;
*)
    "${reg[@]}" >"$OUT/reg.log" 2>&1 &
    rp=$!
    sleep 2 ;;
esac
grep -E "VmRSS|RssAnon" "/proc/$rp/status" >"$OUT/before.txt"
"$B/rspload" -registrar=127.0.0.1:3863 -asapannounce=off -loglevel=1 -pes="$N" \
    -mode=keepalive-only -duration=20 -registrarpid="$rp" >"$OUT/rspload.txt" 2>&1 &
lp=$!
case $MODE in
live)
    sleep 9
    kill -KILL "$rp" ;;
*)
    sleep 12
    grep -E "VmRSS|RssAnon" "/proc/$rp/status" >"$OUT/during.txt"
    cat "/proc/$rp/smaps" >"$OUT/smaps.txt"
    gdb -p "$rp" -batch -ex 'set language c' -ex 'call (void)malloc_stats()' \
        -ex 'call (int)malloc_info(0, (void*)stdout)' >"$OUT/gdb.txt" 2>&1 ;;
esac
wait $lp
grep -E "^(registrations|pes_lost|registrar_rss|registrar_anon)" "$OUT/rspload.txt"
[ "$MODE" = live ] || kill -TERM "$rp"
wait
