#!/usr/bin/env bash
# The demo services against RSPLIB 3.4.4 over kernel SCTP, in the VM (sctp-vm run --net=ns:5).
# Our registrar A ($1001) on h1, RSPLIB's registrar B ($2002) on h2 (not peered); pool
# elements on h3 and h4, pool users on h5. Every phase uses a pool of its own.
#
# For each of Ping Pong, CalcApp and Scripting:
#   (a) RSPLIB's client -> our `rspserver` (at our registrar A and at RSPLIB's registrar B);
#   (b) our client -> RSPLIB's `rspserver` (at B and at A);
#   (c) failover mid-session in both directions: two PEs, the serving one SIGKILLed (or
#       failing by its -pppfailureafter= / -capfailureafter= option); the client goes on at
#       the other PE: Ping Pong keeps counting (reply numbers without gap), the CalcApp job
#       under way completes (from the PE's cookie) and the completed-job counts agree,
#       the Scripting result is byte-identical to a run without failure.
# The fractal service: fractal-interop.sh.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/services-lib.sh"

# serving_host HOST...: the first of the hosts with an SCTP association to the client host
# (the PE serving the session right now; -a: RSPLIB's CalcApp PE has a one-to-many socket).
serving_host() {
  local h
  for h; do
    if ip netns exec "$h" ss -Hna --sctp 2>/dev/null | grep -Fq "$H5"; then
      echo "$h"
      return 0
    fi
  done
  return 1
}

# ======================================================================================
# Ping Pong

# acks FILE: "MESSAGE-NO PE-ID REPLY-NO" per Pong received (RSPLIB's and our client print
# the same "Ack #M from PE $ID (reply #R)").
acks() {
  strip "$1" | sed -n 's/^.*Ack #\([0-9]*\) from PE \$\([0-9a-fA-F]*\) (reply #\([0-9]*\)).*$/\1 \2 \3/p'
}
count_acks() { acks "$1" | wc -l; }
# replies_counting FILE MIN: at least MIN Pongs; reply numbers 1, 2, 3, ... without gap or
# repetition, message numbers increasing.
replies_counting() {
  acks "$1" | awk -v min="$2" '
    { if ($3 != NR || (NR > 1 && $1 <= last)) { printf "    Pong %d: message #%s reply #%s\n", NR, $1, $3; bad = 1 }
      last = $1 }
    END { if (NR < min) { printf "    only %d Pongs\n", NR; bad = 1 }; exit bad }'
}
# pes_of FILE: the PEs that answered, in order of first answer.
pes_of() { acks "$1" | awk '!seen[$2]++ { printf "%s%s", sep, $2; sep = " " }'; }
acks_at_least() { (($(count_acks "$1") >= $2)); }

setup

start_registrars

log "--- ping-pong 1: RSPLIB's pingpongclient, our PEs \$31/\$41 at our registrar A; serving PE SIGKILLed"
our_pe pp1-h3 h3 31 A PP1 -pingpong
our_pe pp1-h4 h4 41 A PP1 -pingpong
wait_registered "(a) ping-pong: our PEs \$31, \$41 registered at our registrar" A PP1 31 41
start pp1-client "$CLIENT_HOST" stdbuf -oL pingpongclient -registrar="$H1:3863" -poolhandle=PP1 \
  -interval=200 -asapannounce=off "${RSPLIB_LOG[@]}"
wait_for 30 acks_at_least "$OUT/pp1-client.log" 10
first=$(pes_of "$OUT/pp1-client.log")
check "(a) ping-pong: RSPLIB's client got >= 10 Pongs from one of our PEs via our registrar (PE \$$first)" \
  eval "replies_counting '$OUT/pp1-client.log' 10 && [[ '$first' == 000000[34]1 ]]"
before=$(count_acks "$OUT/pp1-client.log")
victim=pp1-h$([ "$first" = 00000031 ] && echo 3 || echo 4)
kill9 "$victim"
wait_for 30 acks_at_least "$OUT/pp1-client.log" $((before + 15))
stop pp1-client
check "(c) ping-pong: after SIGKILL of our serving PE, RSPLIB's client went on at our other PE, reply numbers without gap ($(count_acks "$OUT/pp1-client.log") Pongs from $(pes_of "$OUT/pp1-client.log"))" \
  eval "replies_counting '$OUT/pp1-client.log' $((before + 15)) && [ \"\$(pes_of '$OUT/pp1-client.log' | wc -w)\" = 2 ]"
stop pp1-h3
stop pp1-h4

log "--- ping-pong 2: RSPLIB's pingpongclient, our PEs \$32/\$42 with -pppfailureafter=5 at RSPLIB's registrar B"
our_pe pp2-h3 h3 32 B PP2 -pingpong -pppfailureafter=5
our_pe pp2-h4 h4 42 B PP2 -pingpong -pppfailureafter=5
wait_registered "(a) ping-pong: our PEs \$32, \$42 registered at RSPLIB's registrar" B PP2 32 42
start pp2-client "$CLIENT_HOST" stdbuf -oL pingpongclient -registrar="$H2:3863" -poolhandle=PP2 \
  -interval=200 -asapannounce=off "${RSPLIB_LOG[@]}"
wait_for 40 acks_at_least "$OUT/pp2-client.log" 22
stop pp2-client
check "(a) ping-pong: RSPLIB's client got Pongs from our PEs via RSPLIB's registrar" \
  acks_at_least "$OUT/pp2-client.log" 5
fo=$(strip "$OUT/pp2-client.log" | grep -c 'RSERPOOL_FAILOVER_COMPLETE')
check "(c) ping-pong: our PEs fail every 5 Pongs (-pppfailureafter=5): RSPLIB's client failed over $fo times, reply numbers without gap, both PEs served" \
  eval "replies_counting '$OUT/pp2-client.log' 22 && ((fo >= 3)) && [ \"\$(pes_of '$OUT/pp2-client.log' | wc -w)\" = 2 ]"
check "(c) ping-pong: both our PEs log their failure tester aborting sessions" \
  eval "grep -q 'failure tester, aborting after 5 replies' '$OUT/pp2-h3.log' && grep -q 'failure tester, aborting after 5 replies' '$OUT/pp2-h4.log'"
stop pp2-h3
stop pp2-h4

log "--- ping-pong 3: our pingpongclient, RSPLIB's PEs \$33/\$43 at RSPLIB's registrar B; serving PE SIGKILLed"
rsplib_pe pp3-h3 h3 33 B PP3 -pingpong
rsplib_pe pp3-h4 h4 43 B PP3 -pingpong
wait_registered "(b) ping-pong: RSPLIB's PEs \$33, \$43 registered at RSPLIB's registrar" B PP3 33 43
start pp3-client "$CLIENT_HOST" "$BIN/pingpongclient" -registrar="$H2:3863" -poolhandle=PP3 \
  -interval=200 -messages=30 -transport=sctp -asapannounce=off "${OUR_LOG[@]}"
wait_for 30 acks_at_least "$OUT/pp3-client.log" 10
first=$(pes_of "$OUT/pp3-client.log")
check "(b) ping-pong: our client got >= 10 Pongs from RSPLIB's PE \$$first" \
  eval "replies_counting '$OUT/pp3-client.log' 10 && [[ '$first' == 000000[34]3 ]]"
kill9 "pp3-h$([ "$first" = 00000033 ] && echo 3 || echo 4)"
wait_exit pp3-client 40
check "(c) ping-pong: after SIGKILL of RSPLIB's serving PE our client completed 30 Pongs at the other, reply numbers without gap, exit 0 (rc $EXIT_RC)" \
  eval "[ $EXIT_RC = 0 ] && replies_counting '$OUT/pp3-client.log' 30 && [ \"\$(pes_of '$OUT/pp3-client.log' | wc -w)\" = 2 ]"
check "(c) ping-pong: our client's summary: 30 Pongs, no gap, 1 failover" \
  grep -q 'pingpongclient: 30 pong(s), 0 gap(s), 1 failover(s)' "$OUT/pp3-client.log"
stop pp3-h3
stop pp3-h4

log "--- ping-pong 4: our pingpongclient, RSPLIB's PEs \$34/\$44 with -pppfailureafter=5 at our registrar A"
rsplib_pe pp4-h3 h3 34 A PP4 -pingpong -pppfailureafter=5
rsplib_pe pp4-h4 h4 44 A PP4 -pingpong -pppfailureafter=5
wait_registered "(b) ping-pong: RSPLIB's PEs \$34, \$44 registered at our registrar" A PP4 34 44
start pp4-client "$CLIENT_HOST" "$BIN/pingpongclient" -registrar="$H1:3863" -poolhandle=PP4 \
  -interval=200 -messages=22 -transport=sctp -asapannounce=off "${OUR_LOG[@]}"
wait_exit pp4-client 40
check "(b)(c) ping-pong: our client, RSPLIB's PEs failing every 5 Pongs: 22 Pongs, reply numbers without gap, both PEs, exit 0 (rc $EXIT_RC)" \
  eval "[ $EXIT_RC = 0 ] && replies_counting '$OUT/pp4-client.log' 22 && [ \"\$(pes_of '$OUT/pp4-client.log' | wc -w)\" = 2 ]"
check "(c) ping-pong: our client's summary: 22 Pongs, no gap, 4 failovers" \
  grep -q 'pingpongclient: 22 pong(s), 0 gap(s), 4 failover(s)' "$OUT/pp4-client.log"
check "(c) ping-pong: RSPLIB's failure tester fired" \
  grep -q 'Failure Tester' "$OUT/pp4-h3.log" "$OUT/pp4-h4.log"
stop pp4-h3
stop pp4-h4

# ======================================================================================
# CalcApp

# jobs_completed FILE: "Job #N completed" lines (RSPLIB's and our calcappclient).
jobs_completed() { strip "$1" | grep -c '^Job #[0-9]* completed'; }
job_done() { strip "$1" | grep -q "^Job #$2 completed"; }
# scalar FILE NAME: a value of a CalcApp scalar file.
scalar() { sed -n "s/^scalar \"[^\"]*\" \"CalcAppPU $2\" *//p" "$1" 2>/dev/null; }
# Jobs are drawn with exponentially distributed sizes (mean 600,000 calculations), and the
# job under way is more likely a long one. The PEs of phases 1 and 3 compute 400,000
# calculations/s, and a job is a candidate for the kill only up to this size (7.5 s of work):
# the killed job must be able to finish at the other PE within the client's 24 s run.
KILL_MAX_JOB_SIZE=3000000
# job_running FILE: the number of the job RSPLIB's client has accepted and not completed (if
# it is at most KILL_MAX_JOB_SIZE).
rsplib_job_running() {
  strip "$1" | awk -v max=$KILL_MAX_JOB_SIZE '
    /^Request for job #[0-9]+ \(job size/ { size = $NF; sub(/\)$/, "", size) }
    /^Job #[0-9]* accepted/ { j = $2; js = size } /^Job #[0-9]* completed/ { if ($2 == j) j = "" }
    END { if (j == "" || js + 0 > max) exit 1; sub(/^#/, "", j); print j }'
}
# busy_by_sockets CLIENT-LOG PHASE: the host of PE PHASE-h3/-h4 holding the client's association
# (serving_host), else the one whose RSPLIB log shows a job running (rsplib_calcapp_busy).
busy_by_sockets() { serving_host h3 h4 || rsplib_calcapp_busy "$2"; }

# rsplib_calcapp_busy PHASE: the host of RSPLIB's CalcApp PE PHASE-h3/-h4 with a job running
# by its own output ("Job added" last, not "Job removed"): `ss` does not list the
# associations of its one-to-many socket.
rsplib_calcapp_busy() {
  local h
  for h in h3 h4; do
    if grep -E 'Job (added|removed)' "$OUT/$1-$h.log" 2>/dev/null | tail -n 1 | grep -q 'Job added'; then
      echo "$h"
      return 0
    fi
  done
  return 1
}

# our_calcapp_host CLIENT-LOG PHASE: the host of the PE our CalcApp client's session is at now (our
# client logs "CalcApp: session at PE $ID" at every session start and failover, unbuffered;
# phase 3's PEs are $53 on h3 and $63 on h4). The sockets (serving_host) did not tell it
# reliably there, RSPLIB's PEs holding every association on one one-to-many socket: seen once,
# the kill hit the PE the client was not using, and the client never failed over.
our_calcapp_host() {
  local id
  id=$(strip "$1" | sed -n 's/.*CalcApp: session at PE \$\([0-9a-fA-F]*\).*/\1/p' | tail -n 1)
  case $id in
  00000053) echo h3 ;;
  00000063) echo h4 ;;
  *) return 1 ;;
  esac
}

# kill_mid_job CLIENT-LOG PHASE RUNNING-FUNC HOST-FUNC [MIN-AGE-MS] [CLIENT-END]: waits for a
# job under way at one of the PEs PHASE-h3 / PHASE-h4 (HOST-FUNC CLIENT-LOG PHASE names its
# host: busy_by_sockets or our_calcapp_host) for at least MIN-AGE-MS (default 0: at once; more
# lets the PE send its first cookie for the job first), SIGKILLs that PE; KILLED_JOB is the
# job's number, VICTIM the PE. CLIENT-END (in
# $SECONDS) is when the client's -runtime ends: no kill in its last KILL_MARGIN seconds, so
# that the killed job (at most KILL_MAX_JOB_SIZE calculations) can still complete at the
# other PE (seen once: a kill in the last second of the client's run, which then ended with
# that job unfinished).
KILLED_JOB= VICTIM=
KILL_MARGIN=10
# Run time of the CalcApp clients whose PE is killed mid-job: the first job completes within
# ~7 s; then the kill may take as long as kill_mid_job's own 40 s bound (a window of ~20 s
# found no job to kill once, both phases of one run), and KILL_MARGIN is left for the killed
# job.
KILL_CLIENT_RUNTIME=56
kill_mid_job() {
  local logf=$1 phase=$2 fn=$3 host_fn=$4 min_age=${5:-0} end=$((SECONDS + 40))
  local h j seen= since=0 now
  if [ -n "${6:-}" ] && (($6 - KILL_MARGIN < end)); then
    end=$(($6 - KILL_MARGIN))
  fi
  KILLED_JOB= VICTIM=
  while ((SECONDS < end)); do
    now=$((${EPOCHREALTIME/./} / 1000))
    if ! j=$("$fn" "$logf"); then
      seen=
    elif [ "$j" != "$seen" ]; then
      seen=$j since=$now
    fi
    # The client's job is read again after the PE was found: had the job just completed and
    # the next one started at the other PE meanwhile (seen once: the kill then hit a job of
    # 50 ms without a cookie), the client's log now names another job.
    # Our PE's own log is read last: RSPLIB's client prints a job's completion up to ~0.5 s
    # after the PE finished it (seen once: the kill then hit a PE whose job was done).
    if [ -n "$seen" ] && ((now - since >= min_age)) &&
      h=$("$host_fn" "$logf" "$phase") &&
      [ "$("$fn" "$logf")" = "$j" ] &&
      ! grep -Eq "job assoc#[0-9]+/$j is complete" "$OUT/$phase-$h.log" 2>/dev/null; then
      KILLED_JOB=$j VICTIM=$phase-$h
      kill9 "$VICTIM"
      log "job #$j was under way at $VICTIM"
      return 0
    fi
    sleep 0.2
  done
  return 1
}

log "--- calcapp 1: RSPLIB's calcappclient, our PEs \$51/\$61 at our registrar A; PE SIGKILLed mid-job"
for h in 3 4; do
  our_pe "ca1-h$h" "h$h" "$((h + 2))1" A CA1 -calcapp -capcapacity=400000 -capcookiemaxtime=0.5 \
    -capvector="$OUT/ca1-h$h.vec" -capscalar="$OUT/ca1-h$h.sca"
done
wait_registered "(a) calcapp: our PEs \$51, \$61 registered at our registrar" A CA1 51 61
ca1_end=$((SECONDS + KILL_CLIENT_RUNTIME))
start ca1-client "$CLIENT_HOST" stdbuf -oL calcappclient -registrar="$H1:3863" -poolhandle=CA1 \
  -jobinterval=2 -jobsize=600000 -runtime=$KILL_CLIENT_RUNTIME -vector="$OUT/ca1-client.vec" \
  -scalar="$OUT/ca1-client.sca" -asapannounce=off "${RSPLIB_LOG[@]}"
wait_for 30 eval "((\$(jobs_completed '$OUT/ca1-client.log') >= 1))"
check "(a) calcapp: RSPLIB's client completed jobs at our PEs via our registrar" \
  eval "(($(jobs_completed "$OUT/ca1-client.log") >= 1))"
# Our PEs send a cookie at most every 0.5 s (-capcookiemaxtime): kill once one has gone out
# for the job, so that the failover carries it.
check "(c) calcapp: a job under way at one of our PEs for 0.8 s, that PE SIGKILLed" \
  kill_mid_job "$OUT/ca1-client.log" ca1 rsplib_job_running busy_by_sockets 800 "$ca1_end"
wait_exit ca1-client 60
completed=$(jobs_completed "$OUT/ca1-client.log")
check "(c) calcapp: RSPLIB's client failed over with the PE's cookie and completed job #${KILLED_JOB:-?} (under way at the killed PE) at the other one" \
  eval "[ -n '$KILLED_JOB' ] && job_done '$OUT/ca1-client.log' '$KILLED_JOB' && strip '$OUT/ca1-client.log' | grep -q 'FAILOVER_COMPLETE, cookie=yes'"
check "(c) calcapp: RSPLIB's client ended by itself; its scalar file counts $completed completed jobs as its output, at most one job unfinished at the end (started $(scalar "$OUT/ca1-client.sca" 'Total Jobs Started'))" \
  eval "[ $EXIT_RC = 0 ] && [ \"\$(scalar '$OUT/ca1-client.sca' 'Total Jobs Completed')\" = $completed ] && (( \$(scalar '$OUT/ca1-client.sca' 'Total Jobs Started') - $completed <= 1 )) && [ \$((\$(wc -l <'$OUT/ca1-client.vec') - 1)) = $completed ]"
stop_all_pes ca1

log "--- calcapp 2: RSPLIB's calcappclient, our PEs \$52/\$62 with -capfailureafter=2 at RSPLIB's registrar B"
# Each PE session ends after two cookies (0.2 s of work, then ~0.3 s to fail over): at
# 1,000,000 calculations/s the client's 16 s move a job by ~6,000,000 calculations, so even a
# large first job (exponential sizes, mean 800,000) completes. A job of more than 200,000
# calculations (78 % of them) meets the failure tester; with cookies every 0.3 s it took jobs
# of 600,000 (47 %), and once none of the 7 jobs of a run was that large.
for h in 3 4; do
  our_pe "ca2-h$h" "h$h" "$((h + 2))2" B CA2 -calcapp -capcapacity=1000000 -capcookiemaxtime=0.1 \
    -capfailureafter=2 -capvector="$OUT/ca2-h$h.vec" -capscalar="$OUT/ca2-h$h.sca"
done
wait_registered "(a) calcapp: our PEs \$52, \$62 registered at RSPLIB's registrar" B CA2 52 62
start ca2-client "$CLIENT_HOST" stdbuf -oL calcappclient -registrar="$H2:3863" -poolhandle=CA2 \
  -jobinterval=2 -jobsize=800000 -runtime=16 -vector="$OUT/ca2-client.vec" \
  -scalar="$OUT/ca2-client.sca" -asapannounce=off "${RSPLIB_LOG[@]}"
wait_exit ca2-client 60
completed=$(jobs_completed "$OUT/ca2-client.log")
aborts=$(cat "$OUT"/ca2-h[34].log | grep -c 'CalcApp: failure tester, aborting session')
check "(a)(c) calcapp: RSPLIB's client via RSPLIB's registrar, our PEs aborting after 2 cookies ($aborts times): $completed jobs completed, counts agree (started $(scalar "$OUT/ca2-client.sca" 'Total Jobs Started'))" \
  eval "[ $EXIT_RC = 0 ] && ((completed >= 1 && aborts >= 1)) && [ \"\$(scalar '$OUT/ca2-client.sca' 'Total Jobs Completed')\" = $completed ] && (( \$(scalar '$OUT/ca2-client.sca' 'Total Jobs Started') - $completed <= 1 ))"
stop_all_pes ca2

log "--- calcapp 3: our calcappclient, RSPLIB's PEs \$53/\$63 at RSPLIB's registrar B; PE SIGKILLed mid-job"
for h in 3 4; do
  rsplib_pe "ca3-h$h" "h$h" "$((h + 2))3" B CA3 -calcapp -capcapacity=400000 -capcookiemaxtime=0.5 \
    -capvector="$OUT/ca3-h$h.vec" -capscalar="$OUT/ca3-h$h.sca"
done
wait_registered "(b) calcapp: RSPLIB's PEs \$53, \$63 registered at RSPLIB's registrar" B CA3 53 63
ca3_end=$((SECONDS + KILL_CLIENT_RUNTIME))
start ca3-client "$CLIENT_HOST" "$BIN/calcappclient" -registrar="$H2:3863" -poolhandle=CA3 \
  -jobinterval=2 -jobsize=600000 -runtime=$KILL_CLIENT_RUNTIME -vector="$OUT/ca3-client.vec" \
  -scalar="$OUT/ca3-client.sca" -transport=sctp -asapannounce=off "${OUR_LOG[@]}"
# Our client logs "CalcApp: request for job #N" and "Job #N completed": the job under way
# is the last one requested if it is not completed (one job at a time).
our_job_running() {
  strip "$1" | awk -v max=$KILL_MAX_JOB_SIZE '
    /CalcApp: request for job #[0-9]+/ { for (i = 1; i <= NF; i++) if ($i ~ /^#[0-9]+$/) j = substr($i, 2)
      js = $NF; sub(/\)$/, "", js) }
    /^Job #[0-9]* completed/ { if (substr($2, 2) == j) j = "" }
    END { if (j == "" || js + 0 > max) exit 1; print j }'
}
wait_for 30 eval "((\$(jobs_completed '$OUT/ca3-client.log') >= 1))"
check "(b) calcapp: our client completed jobs at RSPLIB's PEs" \
  eval "(($(jobs_completed "$OUT/ca3-client.log") >= 1))"
check "(c) calcapp: a job under way at one of RSPLIB's PEs, that PE SIGKILLed" \
  kill_mid_job "$OUT/ca3-client.log" ca3 our_job_running our_calcapp_host 0 "$ca3_end"
wait_exit ca3-client 60
completed=$(jobs_completed "$OUT/ca3-client.log")
check "(c) calcapp: our client completed job #${KILLED_JOB:-?} (under way at the killed PE) at the other one" \
  eval "[ -n '$KILLED_JOB' ] && job_done '$OUT/ca3-client.log' '$KILLED_JOB'"
check "(c) calcapp: our client ended by itself (rc $EXIT_RC) with $completed completed jobs, >= 1 failover, scalar and vector files agree" \
  eval "[ $EXIT_RC = 0 ] && grep -q 'started, $completed completed, [1-9][0-9]* failover(s)' '$OUT/ca3-client.log' && [ \"\$(scalar '$OUT/ca3-client.sca' 'Total Jobs Completed')\" = $completed ] && [ \$((\$(wc -l <'$OUT/ca3-client.vec') - 1)) = $completed ]"
stop_all_pes ca3

log "--- calcapp 4: our calcappclient, RSPLIB's PE \$54 at our registrar A"
rsplib_pe ca4-h3 h3 54 A CA4 -calcapp -capvector="$OUT/ca4-h3.vec" -capscalar="$OUT/ca4-h3.sca"
wait_registered "(b) calcapp: RSPLIB's PE \$54 registered at our registrar" A CA4 54
start ca4-client "$CLIENT_HOST" "$BIN/calcappclient" -registrar="$H1:3863" -poolhandle=CA4 \
  -jobinterval=1 -jobsize=300000 -runtime=8 -vector="$OUT/ca4-client.vec" \
  -scalar="$OUT/ca4-client.sca" -transport=sctp -asapannounce=off "${OUR_LOG[@]}"
wait_exit ca4-client 40
completed=$(jobs_completed "$OUT/ca4-client.log")
check "(b) calcapp: our client via our registrar, RSPLIB's PE: $completed jobs completed, no failover, exit 0 (rc $EXIT_RC)" \
  eval "[ $EXIT_RC = 0 ] && ((completed >= 2)) && grep -q 'started, $completed completed, 0 failover(s)' '$OUT/ca4-client.log'"
stop_all_pes ca4

# ======================================================================================
# Scripting

# The work package: `ssrun` works 3 s, then writes a result (~40 KB: three DOWNLOAD
# chunks) made of its input, the environment's SHA-1 and a computed table; the reference
# result comes from running it here.
WORK=$OUT/work
mkdir -p "$WORK/pkg" "$WORK/ref"
cat >"$WORK/pkg/ssrun" <<'EOF'
#!/bin/sh
out=$1 env=$2
sleep 3
{
  echo "input: $(cat my-input.txt)"
  if [ -n "$env" ]; then echo "environment: $(sha1sum <"$env" | cut -d' ' -f1)"; else echo "environment: none"; fi
  seq 1 5000 | awk '{ print $1, ($1 * $1) % 7919 }'
} >"$out"
EOF
chmod 755 "$WORK/pkg/ssrun"
echo "services-interop $$" >"$WORK/pkg/my-input.txt"
tar czf "$WORK/input.tar.gz" -C "$WORK/pkg" ssrun my-input.txt
head -c 300000 /dev/urandom >"$WORK/environment.bin"
(cd "$WORK/ref" && tar xzf ../input.tar.gz && ./ssrun ../ref-noenv.out "" &&
  ./ssrun ../ref-env.out "$WORK/environment.bin")
check "scripting: reference results computed ($(wc -c <"$WORK/ref-noenv.out") bytes)" \
  test -s "$WORK/ref-env.out"

# download_failovers LOG: RSPLIB's scriptingclient failing over right after "Downloading ..."
# with no close or abort from the PE (RSPLIB's own PE alike: README.md). These failovers
# are RSPLIB's defect; each costs one more run of the work.
download_failovers() {
  strip "$1" | grep -v ': P[0-9]*\.' | awk '/Downloading \.\.\./ { d = 1; next }
    /FAILOVER \.\.\./ { if (d) n++; d = 0; next }
    /RSERPOOL_FAILOVER/ { next }
    { d = 0 }
    END { print n + 0 }'
}

# scr_processing LOG: the client says the PE is processing (RSPLIB: "is processing ...",
# ours: "Processing ...").
scr_processing() { strip "$1" | grep -q -i 'processing \.\.\.'; }
# kill_processing PHASE LOG: SIGKILLs the PE at which the work runs; VICTIM names it.
kill_processing() {
  local phase=$1 logf=$2 h
  VICTIM=
  wait_for 30 scr_processing "$logf" || return 1
  h=$(serving_host h3 h4) || return 1
  sleep 1
  VICTIM=$phase-$h
  kill9 "$VICTIM"
}

log "--- scripting 1: RSPLIB's scriptingclient, our PEs \$71/\$81 at our registrar A; PE SIGKILLed while working"
for h in 3 4; do our_pe "sc1-h$h" "h$h" "$((h + 4))1" A SC1 -scripting; done
wait_registered "(a) scripting: our PEs \$71, \$81 registered at our registrar" A SC1 71 81
start sc1-client "$CLIENT_HOST" stdbuf -oL scriptingclient -registrar="$H1:3863" -poolhandle=SC1 \
  -input="$WORK/input.tar.gz" -environment="$WORK/environment.bin" -output="$OUT/sc1.out" \
  -retrydelay=1000 -asapannounce=off "${RSPLIB_LOG[@]}"
check "(c) scripting: work under way at one of our PEs, that PE SIGKILLed" \
  kill_processing sc1 "$OUT/sc1-client.log"
wait_exit sc1-client 60
check "(a)(c) scripting: RSPLIB's client completed at our other PE (exit $EXIT_RC), result identical to the run without failure" \
  eval "[ $EXIT_RC = 0 ] && cmp '$WORK/ref-env.out' '$OUT/sc1.out'"
dl_fo=$(download_failovers "$OUT/sc1-client.log")
check "(c) scripting: RSPLIB's client ran the work twice (READY from two sessions) plus once per failover of its download defect ($dl_fo)" \
  eval "(( \$(strip '$OUT/sc1-client.log' | grep -c 'Server .* is ready!') == 2 + dl_fo && \$(strip '$OUT/sc1-client.log' | grep -c 'Downloading') == 1 + dl_fo ))"
stop_all_pes sc1

log "--- scripting 2: RSPLIB's scriptingclient, our PE \$72 at RSPLIB's registrar B"
our_pe sc2-h3 h3 72 B SC2 -scripting
wait_registered "(a) scripting: our PE \$72 registered at RSPLIB's registrar" B SC2 72
start sc2-client "$CLIENT_HOST" stdbuf -oL scriptingclient -registrar="$H2:3863" -poolhandle=SC2 \
  -input="$WORK/input.tar.gz" -output="$OUT/sc2.out" -retrydelay=1000 -asapannounce=off \
  "${RSPLIB_LOG[@]}"
wait_exit sc2-client 40
dl_fo=$(download_failovers "$OUT/sc2-client.log")
check "(a) scripting: RSPLIB's client via RSPLIB's registrar, our PE: exit $EXIT_RC, result identical to the reference, no failover but $dl_fo of its download defect" \
  eval "[ $EXIT_RC = 0 ] && cmp '$WORK/ref-noenv.out' '$OUT/sc2.out' && (( \$(strip '$OUT/sc2-client.log' | grep -c 'FAILOVER \.\.\.') == dl_fo ))"
stop_all_pes sc2

log "--- scripting 3: our scriptingclient, RSPLIB's PEs \$73/\$83 at RSPLIB's registrar B; PE SIGKILLed while working"
for h in 3 4; do rsplib_pe "sc3-h$h" "h$h" "$((h + 4))3" B SC3 -scripting; done
wait_registered "(b) scripting: RSPLIB's PEs \$73, \$83 registered at RSPLIB's registrar" B SC3 73 83
start sc3-client "$CLIENT_HOST" "$BIN/scriptingclient" -registrar="$H2:3863" -poolhandle=SC3 \
  -input="$WORK/input.tar.gz" -environment="$WORK/environment.bin" -output="$OUT/sc3.out" \
  -retrydelay=1000 -transport=sctp -asapannounce=off "${OUR_LOG[@]}"
check "(c) scripting: work under way at one of RSPLIB's PEs, that PE SIGKILLed" \
  kill_processing sc3 "$OUT/sc3-client.log"
wait_exit sc3-client 60
check "(b)(c) scripting: our client completed at RSPLIB's other PE (exit $EXIT_RC), result identical to the run without failure" \
  eval "[ $EXIT_RC = 0 ] && cmp '$WORK/ref-env.out' '$OUT/sc3.out'"
# RSPLIB's PE fails the first session that uploads an environment to it: the STATUS after
# the upload fails ("Status transmission error: Input/output error", RSPLIB's own client
# alike; README.md). Our client fails over after its keep-alive timeout and retries; the
# next PE has it cached. So: one failover for the SIGKILL plus one per such RSPLIB error.
rsplib_errors=$(cat "$OUT"/sc3-h[34].log | grep -c 'Status transmission error')
failovers=$(grep -c '^Failover (trial' "$OUT/sc3-client.log")
check "(c) scripting: our client's failovers: $failovers = 1 (SIGKILL) + $rsplib_errors (RSPLIB's PEs failing after an environment upload, <= 1 each); completion reported" \
  eval "((failovers == 1 + rsplib_errors && rsplib_errors <= 2)) && grep -q '^Completed: $(wc -c <"$WORK/ref-env.out") byte(s) written' '$OUT/sc3-client.log'"
stop_all_pes sc3

log "--- scripting 4: our scriptingclient, RSPLIB's PE \$74 at our registrar A"
rsplib_pe sc4-h3 h3 74 A SC4 -scripting
wait_registered "(b) scripting: RSPLIB's PE \$74 registered at our registrar" A SC4 74
start sc4-client "$CLIENT_HOST" "$BIN/scriptingclient" -registrar="$H1:3863" -poolhandle=SC4 \
  -input="$WORK/input.tar.gz" -output="$OUT/sc4.out" -retrydelay=1000 -transport=sctp \
  -asapannounce=off "${OUR_LOG[@]}"
wait_exit sc4-client 40
check "(b) scripting: our client via our registrar, RSPLIB's PE: exit $EXIT_RC, result identical to the reference, no failover" \
  eval "[ $EXIT_RC = 0 ] && cmp '$WORK/ref-noenv.out' '$OUT/sc4.out' && ! grep -q '^Failover' '$OUT/sc4-client.log'"
stop_all_pes sc4

summary
