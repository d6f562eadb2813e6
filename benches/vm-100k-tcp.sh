#!/bin/bash
# 100,000 PEs over the TCP mapping (issue 9, item 2): our rspregistrar in h1 on stock
# sysctls (only its open-file limit raised, a per-process limit), HOSTS-1 rspload
# processes in h3.. each holding PES_PER_HOST PEs (keep-alive-only), then one in h2 that
# registers the last PES_PER_HOST and resolves at full speed for DURATION seconds. Several
# load hosts because one source address reaches one registrar address:port from at most
# ~28,000 ephemeral ports. Runs in the sctp-vm (the host's open-file hard limit is 20,000):
#
#   taskset -c 1 ../shared/tools/sctp-vm/sctp-vm run --net=ns:5 --mem=6144 --timeout=1500 -- \
#       bash benches/vm-100k-tcp.sh
#
# Environment: BIN (default target/release), OUT (in the shared work directory, default
# benches/out/vm-100k-tcp), HOSTS (load hosts, default 4), PES_PER_HOST (default 25000),
# DURATION (s of resolution, default 300), KA_INTERVAL (the registrar's keep-alive
# transmission interval, ms, default 5000 = stock), REG_OPTS (more registrar options).
# Prints the registrar's RSS per PE and every rspload's figures. Benchmark: asserts nothing.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$here/target/release}
OUT=${OUT:-$here/benches/out/vm-100k-tcp}
HOSTS=${HOSTS:-4}
PES_PER_HOST=${PES_PER_HOST:-25000}
DURATION=${DURATION:-300}
KA_INTERVAL=${KA_INTERVAL:-5000}
REG_OPTS=${REG_OPTS:-}
H1=10.99.0.11
mkdir -p "$OUT"
ulimit -n 400000
total=$((HOSTS * PES_PER_HOST))
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l; }
{
    echo "# $(uname -r), $(nproc) CPU, $(awk '/MemTotal/ { print $2 }' /proc/meminfo) KiB"
    echo "# sysctls: somaxconn $(sysctl -n net.core.somaxconn), port range $(sysctl -n net.ipv4.ip_local_port_range), tcp_mem $(sysctl -n net.ipv4.tcp_mem)"
    echo "# $HOSTS load hosts x $PES_PER_HOST PEs = $total, keep-alive interval $KA_INTERVAL ms, $DURATION s of resolution"
} | tee "$OUT/machine.txt"
ip netns exec h1 "$BIN/rspregistrar" -transport=tcp -asap=$H1:3863 -enrp=$H1:9901 \
    -asapannounce=off -enrpannounce=off -loglevel=1 -quiet \
    -endpointkeepalivetransmissioninterval="$KA_INTERVAL" $REG_OPTS >"$OUT/registrar.log" 2>&1 &
RP=$!
sleep 1
base_rss=$(rss $RP)
base_fds=$(fds $RP)
start=$(date +%s.%N)
pids=()
for h in $(seq 3 $((HOSTS + 1))); do
    ip netns exec h$h "$BIN/rspload" -transport=tcp -registrar=$H1:3863 -asapannounce=off \
        -loglevel=1 -pes="$PES_PER_HOST" -mode=keepalive-only -duration=$((DURATION + 600)) \
        -registrarpid=$RP >"$OUT/h$h.load" 2>&1 &
    pids+=($!)
done
want=$((base_fds + (HOSTS - 1) * PES_PER_HOST))
until [ "$(fds $RP)" -ge "$want" ]; do
    sleep 2
    [ "$(echo "$(date +%s.%N) - $start > 900" | bc)" = 1 ] && { echo "not all connected after 900 s"; break; }
done
echo "$(( $(fds $RP) - base_fds )) of $(( (HOSTS - 1) * PES_PER_HOST )) PEs connected after $(echo "$(date +%s.%N) - $start" | bc) s"
ip netns exec h2 "$BIN/rspload" -transport=tcp -registrar=$H1:3863 -asapannounce=off \
    -loglevel=1 -pes="$PES_PER_HOST" -mode=resolve -duration="$DURATION" \
    -registrarpid=$RP >"$OUT/h2.load" 2>&1 &
RES=$!
want=$((base_fds + total))
until [ "$(fds $RP)" -ge "$want" ] || ! kill -0 $RES 2>/dev/null; do sleep 2; done
sleep 5
all_rss=$(rss $RP)
held=$(( $(fds $RP) - base_fds ))
echo "$held of $total connected after $(echo "$(date +%s.%N) - $start" | bc) s; registrar RSS $base_rss -> $all_rss KiB: $(( (all_rss - base_rss) * 1024 / (held > 0 ? held : 1) )) B per PE held" | tee "$OUT/rss.txt"
wait $RES
echo "registrar RSS at the end of the resolution run: $(rss $RP) KiB, $(fds $RP) descriptors" | tee -a "$OUT/rss.txt"
for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null; done
for p in "${pids[@]}"; do wait "$p"; done
kill $RP
wait $RP 2>/dev/null
for f in "$OUT"/h*.load; do
    echo "== $(basename "$f")"
    grep -E "^(pes|registrations|registration_failures|pes_lost|pu_assocs_aborted|resolutions|resolutions_per_s|latency_p50|latency_p99|keepalives_per_s|registrar_cpu_per_resolution|errors) " "$f"
done
