#!/bin/bash
# Registrar load on the host, TCP mapping over loopback: our rspregistrar under rspload.
#
#   benches/host-registrar.sh [OUTDIR]
#
# Environment: BIN (directory of the release binaries, default target/release or
# $CARGO_TARGET_DIR/release), SIZES (PE counts, default "1 1000 10000 max": max = the
# largest count the open-file hard limit allows, one fd per PE in each process),
# DURATION (s per resolution run, default 10), KA_DURATION (s of keep-alive-only runs,
# default 30), ASSOCS / OUTSTANDING (pool-user associations and handle resolutions in
# flight on each, default 4 / 8 as in rsplib-measured.md), EXTRA_ASSOCS (a second
# resolution run at 10,000 PEs with this many associations, default 16; empty = none).
#
# Prints one line per run (`figure value` pairs) and a Markdown table at the end; every
# rspload output is kept in OUTDIR (or $OUT, as the other benchmarks take it; default
# benches/out/host-<date>). Benchmark, not a test: it asserts nothing about speed.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$here/target}/release}
OUT=${1:-${OUT:-$here/benches/out/host-$(date +%Y%m%d-%H%M%S)}}
DURATION=${DURATION:-10}
KA_DURATION=${KA_DURATION:-30}
ASSOCS=${ASSOCS:-4}
OUTSTANDING=${OUTSTANDING:-8}
EXTRA_ASSOCS=${EXTRA_ASSOCS-16}
mkdir -p "$OUT"
for b in rspregistrar rspload; do
    [ -x "$BIN/$b" ] || { echo "missing $BIN/$b (cargo build --release -p rserpool-mio)" >&2; exit 2; }
done

hard=$(ulimit -Hn)
ulimit -n "$hard" 2>/dev/null
if [ "$hard" = unlimited ]; then max=100000; else max=$(( (hard - 200) / 1000 * 1000 )); fi
[ "$max" -gt 100000 ] && max=100000
SIZES=${SIZES:-"1 1000 10000 max"}
SIZES=${SIZES//max/$max}

port=$(( 20000 + $$ % 10000 ))
{
    echo "# host: $(uname -r), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
    echo "# open files hard limit $hard -> largest run $max PEs"
    echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# commit $(git -C "$here" rev-parse --short HEAD 2>/dev/null)"
} | tee "$OUT/machine.txt"

start_registrar() {
    port=$((port + 2))
    "$BIN/rspregistrar" -transport=tcp -asap=127.0.0.1:$port -enrp=127.0.0.1:$((port + 1)) \
        -asapannounce=off -enrpannounce=off -minaddressscope=loopback -loglevel=1 -quiet \
        "$@" >"$OUT/registrar-$port.log" 2>&1 &
    RP=$!
    sleep 0.5
}

stop_registrar() {
    kill "$RP" 2>/dev/null
    wait "$RP" 2>/dev/null
}

# figure NAME FILE: the value of one `name value unit` line
figure() { awk -v n="$1" '$1 == n { print $2 }' "$2"; }

run() { # run NAME PES [rspload options...]
    local name=$1 pes=$2
    shift 2
    start_registrar
    "$BIN/rspload" -transport=tcp -registrar=127.0.0.1:$port -asapannounce=off -loglevel=1 \
        -pes="$pes" -registrarpid=$RP "$@" >"$OUT/$name.txt" 2>"$OUT/$name.err"
    stop_registrar
    printf '%-22s' "$name"
    for f in registrations registrations_per_s resolutions_per_s latency_p50 latency_p99 \
        registrar_cpu_per_resolution keepalives_per_s registrar_cpu_per_keepalive \
        registrar_cpu_percent registrar_rss_per_pe registrar_anon_per_pe pes_lost pu_assocs_aborted errors; do
        v=$(figure $f "$OUT/$name.txt")
        [ -n "$v" ] && printf ' %s=%s' "$f" "$v"
    done
    echo
}

for n in $SIZES; do
    run "resolve-$n" "$n" -duration="$DURATION" -assocs="$ASSOCS" -outstanding="$OUTSTANDING"
done
if [ -n "$EXTRA_ASSOCS" ]; then
    run "resolve-10000-c$EXTRA_ASSOCS" 10000 -duration="$DURATION" -assocs="$EXTRA_ASSOCS" \
        -outstanding="$OUTSTANDING"
fi
for n in 10000 $max; do
    run "keepalive-$n" "$n" -mode=keepalive-only -duration="$KA_DURATION"
done

echo
echo "| run | PEs | registrations/s | resolutions/s | p50 µs | p99 µs | CPU/resolution µs | keep-alives/s | CPU/keep-alive µs | RSS/PE B | lost | aborted |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for f in "$OUT"/resolve-*.txt "$OUT"/keepalive-*.txt; do
    [ -e "$f" ] || continue
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
        "$(basename "$f" .txt)" "$(figure registrations "$f")" "$(figure registrations_per_s "$f")" \
        "$(figure resolutions_per_s "$f")" "$(figure latency_p50 "$f")" "$(figure latency_p99 "$f")" \
        "$(figure registrar_cpu_per_resolution "$f")" "$(figure keepalives_per_s "$f")" \
        "$(figure registrar_cpu_per_keepalive "$f")" "$(figure registrar_rss_per_pe "$f")" \
        "$(figure pes_lost "$f")" "$(figure pu_assocs_aborted "$f")"
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt"
