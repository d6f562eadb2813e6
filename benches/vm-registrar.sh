#!/bin/bash
# Registrar under ASAP load over kernel SCTP, RSPLIB's rspregistrar and ours side by side in
# ONE run of the sctp-vm (run it through benches/vm-registrar, which starts the VM):
#
#   registrar on h1 (10.99.0.11), rspload on h2 (10.99.0.12), the joining registrar on h3.
#
# Phases, each first with RSPLIB's registrar (stock options, -loglevel=1), then with ours
# (same load, -loglevel=1):
#   resolve-N     N = 1, 1,000, 10,000 PEs: registrations/s, handle resolutions/s (4 pool-user
#                 associations x 8 outstanding), latency, registrar CPU per resolution, RSS/PE
#   keepalive-N   10,000 PEs held for KA_DURATION s: keep-alives/s and registrar CPU each
#   saturate-N    10,000 PEs under saturated resolution for SAT_DURATION s: PEs lost and
#                 pool-user associations aborted (must both be 0)
#   join          our registrar on h1 holds 10,000 PEs; RSPLIB's registrar, then ours, start on
#                 h3 with it as static peer: time until the joiner holds the whole
#                 handlespace (from a capture on br0) and the count the joiner reports (hsdump)
#   join-idle     the same with the serving registrar idle: it sends no keep-alives (interval
#                 1 h), as in RSPLIB's "0.46 s with the serving registrar idle" figure; in the
#                 join phase the 10,000 PEs' keep-alives (2,000/s) take the VM's one CPU
#                 from both registrars. Labels "idle-ours", "idle-rsplib", ...
#
# Environment: BIN (our release binaries), OUT (result directory, must be inside the shared
# working directory), SIZES, DURATION, KA_DURATION, SAT_DURATION, PHASES (subset of
# "resolve keepalive saturate join join-idle"); for the join phase JOIN_BINS (builds of ours that join
# in turn against the same serving registrar: an A/B in one boot), JOIN_ROUNDS, JOIN_WRAP.
set -u
BIN=${BIN:?BIN: directory of our release binaries}
OUT=${OUT:?OUT: result directory}
SIZES=${SIZES:-"1 1000 10000"}
DURATION=${DURATION:-10}
KA_DURATION=${KA_DURATION:-20}
SAT_DURATION=${SAT_DURATION:-60}
SAT_PES=${SAT_PES:-10000}
JOIN_PES=${JOIN_PES:-10000}
PHASES=${PHASES:-"resolve keepalive saturate join"}
IMPLS=${IMPLS:-"rsplib ours"}
# Extra options for our registrar (e.g. OUR_OPTS=-timerslack=5).
OUR_OPTS=${OUR_OPTS:-}
# Join phase: builds of ours that join in turn (default BIN), rounds, and a command put in
# front of our joiner (e.g. JOIN_WRAP="strace -f -c -o /tmp/x").
JOIN_BINS=${JOIN_BINS:-$BIN}
JOIN_ROUNDS=${JOIN_ROUNDS:-1}
JOIN_WRAP=${JOIN_WRAP:-}
H1=10.99.0.11
H3=10.99.0.13
mkdir -p "$OUT"
ulimit -n 400000
# Stock kernel settings: nothing is tuned (net.sctp.sndbuf_policy stays 0).
{
    echo "# VM: $(uname -r), $(nproc) CPU, $(grep MemTotal /proc/meminfo)"
    echo "# net.sctp.sndbuf_policy=$(cat /proc/sys/net/sctp/sndbuf_policy) wmem_default=$(cat /proc/sys/net/core/wmem_default)"
    echo "# RSPLIB: $(dpkg-query -W -f '${Version}' rsplib-registrar 2>/dev/null)"
    echo "# ours: $BIN/rspregistrar $OUR_OPTS"
} | tee "$OUT/vm.txt"

RP=
start_registrar() { # start_registrar IMPL [OPTION...]: extra options for ours
    local impl=$1
    shift
    case $impl in
    rsplib)
        ip netns exec h1 rspregistrar -asap=$H1:3863 -enrp=$H1:9901 -loglevel=1 \
            >"$OUT/reg-$impl-$phase.log" 2>&1 &
        ;;
    ours)
        # shellcheck disable=SC2086
        ip netns exec h1 "$BIN/rspregistrar" -transport=sctp -asap=$H1:3863 -enrp=$H1:9901 \
            -loglevel=1 -quiet $OUR_OPTS "$@" >"$OUT/reg-$impl-$phase.log" 2>&1 &
        ;;
    esac
    RP=$!
    sleep 1
}

stop_registrar() {
    kill "$RP" 2>/dev/null
    wait "$RP" 2>/dev/null
    sleep 1
}

# pes_of HOST REGISTRAR: the PE count an ENRP handlespace dump (our hsdump) shows
pes_of() {
    ip netns exec "$1" "$BIN/hsdump" -transport=sctp -timeout=20000 "$2:9901" 2>/dev/null |
        sed -n 's/^Handlespace: .*, \([0-9]*\) PEs.*/\1/p' | head -1 | grep . || echo 0
}

figure() { awk -v n="$1" '$1 == n { print $2 }' "$2"; }

load() { # load IMPL NAME PES [rspload options]
    local impl=$1 name=$2 pes=$3
    shift 3
    phase=$name
    start_registrar "$impl"
    local t0=$(date +%s)
    ip netns exec h2 "$BIN/rspload" -transport=sctp -registrar=$H1:3863 -asapannounce=off \
        -loglevel=1 -pes="$pes" -registrarpid="$RP" "$@" \
        >"$OUT/$impl-$name.txt" 2>"$OUT/$impl-$name.err"
    echo "$impl-$name: $(($(date +%s) - t0)) s" >>"$OUT/times.txt"
    stop_registrar
    printf '%-22s' "$impl-$name"
    for f in registrations registrations_per_s resolutions_per_s latency_p50 latency_p99 \
        registrar_cpu_per_resolution keepalives_per_s registrar_cpu_per_keepalive \
        registrar_cpu_percent rspload_cpu_percent registrar_rss_per_pe registrar_anon_per_pe pes_lost \
        pu_assocs_aborted errors; do
        v=$(figure $f "$OUT/$impl-$name.txt")
        [ -n "$v" ] && printf ' %s=%s' "$f" "$v"
    done
    echo
}

# joiner_stat LABEL SECONDS: the joiner's page faults and CPU time so far.
joiner_stat() {
    awk -v impl=$1 -v s=$2 -v hz="$(getconf CLK_TCK)" '{ printf "%s joiner after %d s: minflt %d majflt %d utime %.0f ms stime %.0f ms\n", impl, s, $10, $12, $14 * 1000 / hz, $15 * 1000 / hz }' \
        "/proc/$JP/stat" 2>/dev/null | tee -a "$OUT/join.txt"
}

# join_one IMPL LABEL BIN_DIR: start a registrar of IMPL on h3 with h1's as static peer,
# capture br0, record the start, ask after 8 s what it holds (results named LABEL).
join_one() {
    local impl=$1 label=$2 jb=$3
    # The capture must not take the VM's one CPU from the registrars: dumpcap writes its
    # file about every 250 KB, which stopped the VM for 4-9 ms twice in each 10,000-PE
    # transfer (with either implementation joining). So it runs in the idle scheduling
    # class (only when nothing else wants the CPU; the kernel stamps each packet when it
    # takes it, so late reading changes no time) with a ring buffer for the whole join, and
    # it writes, like the joiner's output and start time, to the VM's own tmpfs (/tmp; a
    # write to $OUT, the host's directory, is a host system call during which the VM stops),
    # moved to $OUT afterwards.
    local tmp=/tmp/join-$label
    chrt --idle 0 dumpcap -q -B 64 -i br0 -f "host $H3" -w "$tmp.pcapng" >/dev/null 2>&1 &
    DP=$!
    sleep 2
    cmd=()
    case $impl in
    rsplib)
        cmd=(rspregistrar -asap=$H3:3863 -enrp=$H3:9901 -peer=$H1:9901
            -asapannounce=off -enrpannounce=off -loglevel=1) ;;
    ours)
        cmd=($JOIN_WRAP "$jb/rspregistrar" -transport=sctp -asap=$H3:3863 -enrp=$H3:9901
            -peer=$H1:9901 -asapannounce=off -enrpannounce=off -loglevel=3
            -logcolor=off) ;;
    esac
    # Two start times: "launch" before `ip netns exec` (the time to the exec, 30-170 ms
    # in the VM: `date`'s exit, the namespace's setns and remounts, the shell's start,
    # belongs to the test topology), "start" taken by the shell inside h3 right before
    # it execs the registrar (bash's $EPOCHREALTIME: no process of its own).
    echo "$label launch $(date +%s.%N)" >>"$OUT/join.txt"
    ip netns exec h3 bash -c 'echo "$2 start $EPOCHREALTIME" >>"$1"; shift 2; exec "$@"' \
        - "$tmp.start" "$label" "${cmd[@]}" >"$tmp.log" 2>&1 &
    JP=$!
    # The joiner's page faults and CPU time (/proc/PID/stat fields 10, 12, 14, 15: minflt,
    # majflt, utime, stime in clock ticks) 1 s after its start (our download is done by
    # then; hsdump's dump below would add its own) and after 8 s.
    sleep 1
    cat "$tmp.start" >>"$OUT/join.txt"
    joiner_stat "$label" 1
    sleep 7
    n=$(pes_of h2 $H3)
    echo "$label joiner holds $n PEs after 8 s" | tee -a "$OUT/join.txt"
    joiner_stat "$label" 8
    kill $JP
    wait $JP 2>/dev/null
    # A wrapper (JOIN_WRAP) may have left the registrar running.
    pkill -f -- "-enrp=$H3:9901" 2>/dev/null
    sleep 1
    kill $DP
    wait $DP 2>/dev/null
    mv "$tmp.pcapng" "$OUT/join-$label.pcapng"
    mv "$tmp.log" "$OUT/join-$label.log"
    rm -f "$tmp.start"
    sleep 3
}

for p in $PHASES; do
    case $p in
    resolve)
        for n in $SIZES; do
            for impl in $IMPLS; do
                load $impl resolve-$n "$n" -duration="$DURATION"
            done
        done
        ;;
    keepalive)
        for impl in $IMPLS; do
            load $impl keepalive-10000 10000 -mode=keepalive-only -duration="$KA_DURATION"
        done
        ;;
    saturate)
        for impl in $IMPLS; do
            load $impl saturate-$SAT_PES "$SAT_PES" -duration="$SAT_DURATION"
        done
        ;;
    join | join-idle)
        phase=$p
        prefix= idle=()
        if [ $p = join-idle ]; then
            prefix=idle-
            idle=(-endpointkeepalivetransmissioninterval=3600000)
        fi
        start_registrar ours "${idle[@]}"
        ip netns exec h2 "$BIN/rspload" -transport=sctp -registrar=$H1:3863 -asapannounce=off \
            -loglevel=1 -pes="$JOIN_PES" -mode=keepalive-only -duration=600 \
            >"$OUT/$p-load.txt" 2>"$OUT/$p-load.err" &
        LP=$!
        # Wait until every PE is registered (rspload prints nothing before the end: ask the
        # registrar with hsdump).
        for _ in $(seq 1 120); do
            sleep 2
            n=$(pes_of h3 $H1)
            [ "$n" -ge "$JOIN_PES" ] && break
        done
        echo "serving registrar holds $n PEs" | tee -a "$OUT/join.txt"
        # Joiners: RSPLIB's, then ours; with JOIN_BINS several builds of ours alternate (an
        # A/B in one boot, against the same serving registrar), JOIN_ROUNDS times.
        # Several builds: each runs from its own copy in the VM's /tmp (tmpfs, so in the page
        # cache): a binary that no running process maps is read again from the host's file
        # system on every start (~40 major faults), which the build the serving registrar
        # runs would be spared.
        k=0
        for jb in $JOIN_BINS; do k=$((k + 1)); done
        if [ "$k" -gt 1 ]; then
            bins=
            i=0
            for jb in $JOIN_BINS; do
                i=$((i + 1))
                mkdir -p /tmp/join-bin-$i
                # (A second join phase finds the copies made by the first.)
                [ "$jb" = /tmp/join-bin-$i ] || cp "$jb/rspregistrar" /tmp/join-bin-$i/
                bins="$bins /tmp/join-bin-$i"
            done
            JOIN_BINS=$bins
        fi
        for round in $(seq "$JOIN_ROUNDS"); do
            for impl in $IMPLS; do
                if [ $impl = ours ]; then bins=$JOIN_BINS; else bins=-; fi
                i=0
                for jb in $bins; do
                    i=$((i + 1))
                    label=$prefix$impl
                    [ $impl = ours ] && [ "$k" -gt 1 ] && label=$label-$i
                    [ "$JOIN_ROUNDS" -gt 1 ] && label=$label-r$round
                    join_one "$impl" "$label" "$jb"
                done
            done
        done
        kill -INT $LP
        wait $LP
        stop_registrar
        ;;
    esac
done
cat "$OUT/times.txt"
