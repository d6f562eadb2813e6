#!/bin/bash
# A keep-alive's system calls and CPU over the TCP mapping on the host: our rspregistrar
# holding PES PEs of rspload (keep-alive-only, 16 s), with `perf stat` counting the
# registrar's sendto / recvfrom / epoll_wait calls for 6 s in the middle. Prints the counts
# and rspload's keep-alives/s and registrar CPU per keep-alive (from /proc/PID/stat).
#
#   benches/host-keepalive-syscalls.sh            # BIN=dir of release binaries, PES=10000
#
# Needs `perf` with access to the syscalls tracepoints. Benchmark: asserts nothing.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$here/target}/release}
PES=${PES:-10000}
OUT=${OUT:-$here/benches/out/ka-syscalls-host-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null
port=$((26000 + $$ % 1000 * 2))
"$BIN/rspregistrar" -transport=tcp -asap=127.0.0.1:$port -enrp=127.0.0.1:$((port + 1)) \
    -asapannounce=off -enrpannounce=off -minaddressscope=loopback -loglevel=1 -quiet \
    >"$OUT/registrar.log" 2>&1 &
rp=$!
sleep 0.5
"$BIN/rspload" -transport=tcp -registrar=127.0.0.1:$port -asapannounce=off -loglevel=1 \
    -pes="$PES" -mode=keepalive-only -duration=16 -registrarpid=$rp >"$OUT/rspload.txt" 2>&1 &
lp=$!
sleep 7
perf stat -e 'syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait' \
    -p $rp -- sleep 6 2>&1 | grep -E "sys_enter" | tee "$OUT/perf-stat.txt"
wait $lp
grep -E "^(keepalives_per_s|registrar_cpu_per_keepalive|pes_lost) " "$OUT/rspload.txt"
kill $rp
wait $rp 2>/dev/null
