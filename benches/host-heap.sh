#!/bin/bash
# Where a TCP registrar's heap goes, per PE: our rspregistrar under heaptrack while rspload
# holds PES PEs registered (TCP mapping, loopback), then the largest allocation sites at the
# heap's peak, each divided by the number of PEs.
#
#   benches/host-heap.sh [OUTDIR]
#
# Environment: BIN (directory of the release binaries, default target/release), PES
# (default 10000), TOP (allocation sites listed, default 12). Needs heaptrack
# (`apt-get install heaptrack`). Benchmark, not a test: it asserts nothing.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$here/target}/release}
PES=${PES:-10000}
TOP=${TOP:-12}
OUT=${1:-$here/benches/out/heap-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
command -v heaptrack >/dev/null || { echo "heaptrack missing" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
port=$(( 21000 + $$ % 8000 ))
heaptrack -o "$OUT/registrar" "$BIN/rspregistrar" -transport=tcp -asap=127.0.0.1:$port \
    -enrp=127.0.0.1:$((port + 1)) -asapannounce=off -enrpannounce=off \
    -minaddressscope=loopback -loglevel=1 -quiet >"$OUT/heaptrack.log" 2>&1 &
sleep 2
rp=$(pgrep -f "^$BIN/rspregistrar -transport=tcp -asap=127.0.0.1:$port" | head -1)
"$BIN/rspload" -transport=tcp -registrar=127.0.0.1:$port -asapannounce=off -loglevel=1 \
    -pes="$PES" -mode=keepalive-only -duration=3 -registrarpid="$rp" >"$OUT/rspload.txt" 2>&1
kill -TERM "$rp"
wait
grep -E "^(registrations|pes_lost|registrar_rss_per_pe|registrar_anon_per_pe) " "$OUT/rspload.txt"
heaptrack_print -f "$OUT/registrar.zst" --print-peaks 1 --print-allocators 0 --print-leaks 0 \
    --print-temporary 0 -n 200 2>/dev/null >"$OUT/peaks.txt"
# The peak total, then per allocation site: bytes per PE and the first frame of ours.
awk -v pes="$PES" -v top="$TOP" '
    function bytes(s) {
        if (s ~ /G$/) return substr(s, 1, length(s) - 1) * 1e9
        if (s ~ /M$/) return substr(s, 1, length(s) - 1) * 1e6
        if (s ~ /K$/) return substr(s, 1, length(s) - 1) * 1e3
        sub(/B$/, "", s); return s + 0
    }
    /^[0-9.]+[KMGB]* consumed over/ { pending = bytes($1); calls = $4; next }
    pending && /at (rserpool|\/root\/.cargo)/ {
        site = $2; sub(/.*\/(src|registry\/src\/[^\/]*)\//, "", site)
        if (n < top) printf "%7.1f B/PE  %8d calls  %s\n", pending / pes, calls, site
        n++; pending = 0
    }
' "$OUT/peaks.txt"
heaptrack_print -f "$OUT/registrar.zst" 2>/dev/null | grep -E "^peak heap memory consumption" |
    awk -v pes="$PES" '{ v = $NF; m = 1; if (v ~ /M$/) m = 1e6; if (v ~ /K$/) m = 1e3; if (v ~ /G$/) m = 1e9;
        sub(/[KMGB]+$/, "", v); printf "peak heap %s B, %.0f B per PE\n", $NF, v * m / pes }'
