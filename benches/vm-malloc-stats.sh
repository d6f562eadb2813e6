#!/bin/bash
# Where a registrar's memory goes, in the sctp-vm (or on any host with kernel SCTP): our
# registrar holding N PEs of `rspload -mode=keepalive-only`, its /proc status and smaps, and
# glibc's malloc_stats / malloc_info (through gdb: in use against taken from the system, and
# the free chunks left in the heap). Benchmark, not a test: it asserts nothing.
#
#   taskset -c 1 ../shared/tools/sctp-vm/sctp-vm run --net=lo --mem=3072 -- \
#       env OUT=benches/out/smaps B=target/release N=10000 bash benches/vm-malloc-stats.sh
#
# OUT gets before.txt / during.txt (VmRSS, RssAnon), smaps.txt, reg.log (malloc_stats and
# malloc_info, which the registrar prints on its own stderr/stdout) and rspload.txt.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-benches/out/malloc-stats}
B=${B:-target/release}
N=${N:-10000}
mkdir -p "$OUT"
ulimit -n 65536
"$B/rspregistrar" -asap=127.0.0.1:3863 -enrp=127.0.0.1:9901 -asapannounce=off -enrpannounce=off \
    -minaddressscope=loopback -loglevel=1 -quiet >"$OUT/reg.log" 2>&1 &
rp=$!
sleep 2
grep -E "VmRSS|RssAnon" "/proc/$rp/status" >"$OUT/before.txt"
"$B/rspload" -registrar=127.0.0.1:3863 -asapannounce=off -loglevel=1 -pes="$N" \
    -mode=keepalive-only -duration=8 -registrarpid=$rp >"$OUT/rspload.txt" 2>&1 &
lp=$!
sleep 12
grep -E "VmRSS|RssAnon" "/proc/$rp/status" >"$OUT/during.txt"
cat "/proc/$rp/smaps" >"$OUT/smaps.txt"
gdb -p $rp -batch -ex 'call (void)malloc_stats()' -ex 'call (int)malloc_info(0, (void*)stdout)' \
    >"$OUT/gdb.txt" 2>&1
wait $lp
grep -E "^(registrations|pes_lost|registrar_rss|registrar_anon)" "$OUT/rspload.txt"
kill -TERM $rp
wait
