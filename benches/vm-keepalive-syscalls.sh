#!/bin/bash
# Where a keep-alive's registrar CPU goes: system calls of the registrar under keep-alive-only
# load (10,000 PEs over kernel SCTP, 5 s interval), counted with `strace -c` for 8 s in the
# middle of a 25 s run; RSPLIB's rspregistrar, then ours without and with -timerslack=20.
# Runs in the sctp-vm (one run, VM pinned to host CPU 1):
#
#   taskset -c 1 ../shared/tools/sctp-vm/sctp-vm run --net=ns:3 --mem=3072 --timeout=300 -- \
#       bash benches/vm-keepalive-syscalls.sh
#
# Writes OUT/CONFIG.load (rspload's figures) and OUT/CONFIG.strace; prints a summary.
# Environment: BIN (our release binaries, default target/release), OUT (inside the shared
# working directory, default benches/out/ka-syscalls), PES (10000).
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$here/target/release}
OUT=${OUT:-$here/benches/out/ka-syscalls}
PES=${PES:-10000}
H1=10.99.0.11
mkdir -p "$OUT"
ulimit -n 400000
for cfg in rsplib ours ours-slack20; do
    case $cfg in
    rsplib) ip netns exec h1 rspregistrar -asap=$H1:3863 -enrp=$H1:9901 -loglevel=1 >/dev/null 2>&1 & ;;
    ours) ip netns exec h1 "$BIN/rspregistrar" -transport=sctp -asap=$H1:3863 -enrp=$H1:9901 \
        -loglevel=1 -quiet >/dev/null 2>&1 & ;;
    ours-slack20) ip netns exec h1 "$BIN/rspregistrar" -transport=sctp -asap=$H1:3863 \
        -enrp=$H1:9901 -loglevel=1 -quiet -timerslack=20 >/dev/null 2>&1 & ;;
    esac
    RP=$!
    sleep 1
    ip netns exec h2 "$BIN/rspload" -transport=sctp -registrar=$H1:3863 -asapannounce=off \
        -loglevel=1 -pes="$PES" -registrarpid=$RP -mode=keepalive-only -duration=25 \
        >"$OUT/$cfg.load" 2>&1 &
    LP=$!
    sleep 14
    timeout -s INT 8 strace -c -f -p $RP -o "$OUT/$cfg.strace" 2>/dev/null
    wait $LP
    kill $RP
    wait $RP 2>/dev/null
    sleep 1
    ka=$(awk '$1 == "keepalives_per_s" { print $2 }' "$OUT/$cfg.load")
    cpu=$(awk '$1 == "registrar_cpu_per_keepalive" { print $2 }' "$OUT/$cfg.load")
    lost=$(awk '$1 == "pes_lost" { print $2 }' "$OUT/$cfg.load")
    calls=$(awk '$NF == "total" { print $4 }' "$OUT/$cfg.strace")
    printf '%-13s keep-alives/s %s, registrar CPU per keep-alive %s us, PEs lost %s, system calls per keep-alive (8 s) %s\n' \
        "$cfg" "$ka" "$cpu" "$lost" "$(awk -v c="$calls" -v k="$ka" 'BEGIN { if (k > 0) printf "%.2f", c / (k * 8) }')"
    grep -E '^ *[0-9.]+ +[0-9.]+ +[0-9]+ +[0-9]+' "$OUT/$cfg.strace" | awk '{ printf "    %s %s\n", $NF, $4 }'
done
