#!/usr/bin/env bash
# Interoperability with RSPLIB 3.4.4 over kernel SCTP, in the VM (sctp-vm run --net=ns:5).
# Registrars on h1..h3, pool elements on h4, pool users and hsdump on h5.
#
# (a) RSPLIB's `rspserver -echo` registers at OUR registrar; RSPLIB's `rspterminal` gets
#     echoes through it; the PE's deregistration reaches our registrar.
# (b) OUR `rspserver -echo` registers at RSPLIB's `rspregistrar` (and answers its keep-alives);
#     RSPLIB's `rspterminal` uses it; our PE deregisters on SIGTERM.
# (c) Our registrar A ($1001, h1) and RSPLIB registrars B ($2002, h2) and D ($3003, h3) peer
#     over ENRP; RSPLIB and our PEs registered at A and B. All three agree on the handlespace
#     (our hsdump and RSPLIB's hsdump against each). B is SIGKILLed: A takes its PEs over;
#     B restarts and downloads the handlespace; A is SIGKILLed: B takes everything over;
#     A restarts and downloads the handlespace from an RSPLIB mentor.
#     (A third registrar is needed: a lone surviving RSPLIB registrar never completes a
#     takeover, enrp.md §6.8.4; and D being RSPLIB lets B, not our faster-detecting
#     registrar, win the second takeover.)
# (d) OUR `rspterminal` against an RSPLIB registrar and two RSPLIB echo PEs; the serving PE is
#     SIGKILLed mid-stream: no line lost.
source "$(dirname "$0")/lib.sh"

REG_ADDR=([1]=$H1 [2]=$H2 [3]=$H3)
RSPLIB_LOG=(-loglevel=3 -logcolor=off)
OUR_LOG=(-loglevel=3 -logcolor=off)

listening() { ip netns exec "$1" ss -Hln --sctp 2>/dev/null | grep -q ":$2\b"; }
registrar_up() { wait_for 20 eval "listening h$1 3863 && listening h$1 9901"; }

# peers_of N M...: -peer= options for the registrars on hosts M...
peers_of() {
  local m
  for m; do echo "-peer=${REG_ADDR[m]}:9901"; done
}

# our_registrar NAME N ID [PEER-HOST-NUMBERS...]: our registrar on hN.
our_registrar() {
  local name=$1 n=$2 id=$3
  shift 3
  # shellcheck disable=SC2046
  start "$name" "h$n" "$BIN/rspregistrar" -identifier="$id" -asap="${REG_ADDR[n]}:3863" \
    -enrp="${REG_ADDR[n]}:9901" -transport=sctp "${FAST_TIMERS[@]}" $(peers_of "$@") \
    "${OUR_LOG[@]}" -quiet
}

# rsplib_registrar NAME N ID [PEER-HOST-NUMBERS...]: RSPLIB's rspregistrar on hN.
rsplib_registrar() {
  local name=$1 n=$2 id=$3
  shift 3
  # shellcheck disable=SC2046
  start "$name" "h$n" rspregistrar -identifier="$id" -asap="${REG_ADDR[n]}:3863" \
    -enrp="${REG_ADDR[n]}:9901" "${FAST_TIMERS[@]}" $(peers_of "$@") "${RSPLIB_LOG[@]}" -quiet
}

# our_pe NAME ID N: our echo PE on h4 registered at the registrar on hN only.
our_pe() {
  start "$1" h4 "$BIN/rspserver" -echo -identifier="0x$2" -registrar="${REG_ADDR[$3]}:3863" \
    -transport=sctp -asapannounce=off "${OUR_LOG[@]}" -quiet
}

# rsplib_pe NAME ID N: RSPLIB's echo PE on h4 registered at the registrar on hN only.
rsplib_pe() {
  start "$1" h4 rspserver -echo -identifier="0x$2" -registrar="${REG_ADDR[$3]}:3863" \
    -asapannounce=off "${RSPLIB_LOG[@]}"
}

# rsplib_terminal NAME N PREFIX COUNT: RSPLIB's rspterminal on h5 using the registrar on hN,
# fed "PREFIX 1".."PREFIX COUNT" half a second apart; stopped once all are answered (at most
# 15 s after the last line: it never exits by itself at the end of its input).
rsplib_terminal() {
  local name=$1 n=$2 prefix=$3 count=$4 i
  mkfifo "$OUT/$name.in"
  start_stdin "$name" h5 "$OUT/$name.in" stdbuf -oL rspterminal \
    -registrar="${REG_ADDR[$n]}:3863" -asapannounce=off "${RSPLIB_LOG[@]}"
  exec 4>"$OUT/$name.in"
  for ((i = 1; i <= count; i++)); do
    echo "$prefix $i" >&4
    sleep 0.5
  done
  wait_for 15 all_echoed_once "$OUT/$name.out" "$count" "$prefix" >/dev/null
  exec 4>&-
  stop "$name"
}

# both_dumps PREFIX N EXPECTED...: our hsdump and RSPLIB's hsdump of the registrar on hN both
# show exactly EXPECTED.
both_dumps() {
  local prefix=$1 n=$2
  shift 2
  hs_is hs_ours h5 "${REG_ADDR[n]}:9901" "$OUT/$prefix-h$n-ours.hs" "$@" &&
    hs_is hs_rsplib h5 "${REG_ADDR[n]}:9901" "$OUT/$prefix-h$n-rsplib.hs" "$@"
}

# agree PREFIX "N..." EXPECTED...: both dumps of every registrar on the hosts N... show
# EXPECTED.
agree() {
  local prefix=$1 hosts=$2 n
  shift 2
  for n in $hosts; do both_dumps "$prefix" "$n" "$@" || return 1; done
}

# check_agree WHAT PREFIX "N..." SECONDS EXPECTED...
check_agree() {
  local what=$1 prefix=$2 hosts=$3 limit=$4 n f
  shift 4
  if wait_hs "$limit" agree "$prefix" "$hosts" "$@"; then
    pass "$what"
  else
    fail "$what"
    echo "    expected:"
    printf '    | %s\n' "$@"
    for n in $hosts; do
      for f in ours rsplib; do
        echo "    h$n, $f hsdump:"
        show "$OUT/$prefix-h$n-$f.hs"
      done
    done
  fi
}

pe_line() { echo "EchoPool 000000$1 0000$2"; }

# homes_among PREFIX "N..." HOMES PE...: our and RSPLIB's hsdump of every registrar on the
# hosts N... are identical and hold exactly the PEs PE..., each with one of the HOMES
# (registrar ids, hex digits, separated by |) as its home.
homes_among() {
  local prefix=$1 hosts=$2 homes=$3 n f first=
  shift 3
  for n in $hosts; do
    hs_ours h5 "${REG_ADDR[n]}:9901" "$OUT/$prefix-h$n-ours.hs" || return 1
    hs_rsplib h5 "${REG_ADDR[n]}:9901" "$OUT/$prefix-h$n-rsplib.hs" || return 1
    for f in "$OUT/$prefix-h$n-ours.hs" "$OUT/$prefix-h$n-rsplib.hs"; do
      if [ -z "$first" ]; then first=$f; else cmp -s "$first" "$f" || return 1; fi
    done
  done
  [ "$(cut -d' ' -f2 "$first" | sed 's/^0*//' | sort | tr '\n' ' ')" = \
    "$(printf '%s\n' "$@" | sort | tr '\n' ' ')" ] || return 1
  ! cut -d' ' -f3 "$first" | grep -Evq "^0000($homes)\$"
}

setup

# ======================================================================================
log "--- (a) RSPLIB PE and RSPLIB terminal at our registrar"
our_registrar a-pr 1 0x1001
check "(a) our registrar listens on $H1:3863/9901" registrar_up 1
rsplib_pe a-pe51 51 1
if wait_hs 30 hs_is hs_ours h5 "$H1:9901" "$OUT/a-reg.hs" "$(pe_line 51 1001)"; then
  pass "(a) RSPLIB's PE \$51 registered at our registrar (our hsdump)"
else
  fail "(a) RSPLIB's PE \$51 registered at our registrar (our hsdump)"
  show "$OUT/a-reg.hs.raw"
fi
check "(a) RSPLIB's hsdump reads our registrar's handlespace" \
  hs_is hs_rsplib h5 "$H1:9901" "$OUT/a-reg-rsplib.hs" "$(pe_line 51 1001)"
rsplib_terminal a-term 1 "echo-a" 6
check "(a) RSPLIB's rspterminal got all 6 lines echoed by PE \$51 through our registrar" \
  eval "all_echoed_once '$OUT/a-term.out' 6 echo-a && ! answers '$OUT/a-term.out' | grep -qv '^00000051 '"
# RSPLIB's PE keeps answering our keep-alives (interval 2 s): still registered 5 s later.
sleep 5
check "(a) RSPLIB's PE answers our keep-alives (still registered after 5 s)" \
  hs_is hs_ours h5 "$H1:9901" "$OUT/a-ka.hs" "$(pe_line 51 1001)"
stop a-pe51
check "(a) RSPLIB's PE deregistered at our registrar on SIGINT/SIGTERM" \
  wait_hs 15 hs_is hs_ours h5 "$H1:9901" "$OUT/a-dereg.hs"
stop_all
sleep 1

# ======================================================================================
log "--- (b) our PE at RSPLIB's registrar, RSPLIB terminal"
rsplib_registrar b-pr 2 0x2002
check "(b) RSPLIB's registrar listens on $H2:3863/9901" registrar_up 2
our_pe b-pe61 61 2
if wait_hs 30 hs_is hs_rsplib h5 "$H2:9901" "$OUT/b-reg.hs" "$(pe_line 61 2002)"; then
  pass "(b) our PE \$61 registered at RSPLIB's registrar (RSPLIB's hsdump)"
else
  fail "(b) our PE \$61 registered at RSPLIB's registrar (RSPLIB's hsdump)"
  show "$OUT/b-reg.hs.raw"
fi
check "(b) our hsdump reads RSPLIB's registrar's handlespace" \
  hs_is hs_ours h5 "$H2:9901" "$OUT/b-reg-ours.hs" "$(pe_line 61 2002)"
rsplib_terminal b-term 2 "echo-b" 6
check "(b) RSPLIB's rspterminal got all 6 lines echoed by our PE \$61" \
  eval "all_echoed_once '$OUT/b-term.out' 6 echo-b && ! answers '$OUT/b-term.out' | grep -qv '^00000061 '"
sleep 5
check "(b) our PE answers RSPLIB's keep-alives (still registered after 5 s)" \
  hs_is hs_rsplib h5 "$H2:9901" "$OUT/b-ka.hs" "$(pe_line 61 2002)"
stop b-pe61
check "(b) our PE's deregistration was acknowledged by RSPLIB's registrar" \
  grep -q "deregistered (acknowledged: true)" "$OUT/b-pe61.log"
check "(b) our PE served one session with 6 messages (its exit summary)" \
  grep -q "1 session(s), 6 message(s) received, 6 sent" "$OUT/b-pe61.log"
check "(b) RSPLIB's registrar forgot our PE" \
  wait_hs 15 hs_is hs_rsplib h5 "$H2:9901" "$OUT/b-dereg.hs"
stop_all
sleep 1

# ======================================================================================
log "--- (c) our registrar A and RSPLIB registrars B, D peered over ENRP"
our_registrar c-A 1 0x1001 2 3
rsplib_registrar c-B 2 0x2002 1 3
rsplib_registrar c-D 3 0x3003 1 2
for n in 1 2 3; do check "(c) registrar on h$n listens" registrar_up $n; done
rsplib_pe c-pe51 51 1
our_pe c-pe61 61 1
rsplib_pe c-pe52 52 2
our_pe c-pe62 62 2
expected=("$(pe_line 51 1001)" "$(pe_line 61 1001)" "$(pe_line 52 2002)" "$(pe_line 62 2002)")
check_agree "(c) A, B and D agree on 4 PEs (RSPLIB's and ours, homes A and B), by our and RSPLIB's hsdump" \
  start "1 2 3" 60 "${expected[@]}"

# Every hsdump becomes a short-lived peer of the registrar it asks, and RSPLIB waits for
# every peer's Init Takeover Ack: let those peers expire (last heard 3 s + no response 2 s)
# before a registrar is killed, and ask nobody until the takeover is done.
sleep 6
log "killing B (RSPLIB, home of \$52 and \$62)"
kill9 c-B
sleep 7
expected=("$(pe_line 51 1001)" "$(pe_line 61 1001)" "$(pe_line 52 1001)" "$(pe_line 62 1001)")
check_agree "(c) our registrar A took over B's PEs; A and RSPLIB's D agree" \
  takeover-B "1 3" 40 "${expected[@]}"
check "(c) A logs the takeover of B" \
  grep -q 'took over registrar \$00002002: 2 PEs' "$OUT/c-A.log"
check "(c) our PE \$62 accepted A as its new home (keep-alive with H bit)" \
  grep -q 'home registrar changed: .* -> \$00001001' "$OUT/c-pe62.log"

log "restarting B"
rsplib_registrar c-B2 2 0x2002 1 3
check "(c) B listens again" registrar_up 2
check_agree "(c) restarted RSPLIB registrar B downloaded the handlespace: A, B, D agree" \
  restart-B "1 2 3" 60 "${expected[@]}"

sleep 6
log "killing A (ours, now home of all 4 PEs)"
kill9 c-A
sleep 8
# Which RSPLIB registrar takes over is not fixed: the first of B and D to declare A dead
# sends Init Takeover and the other acknowledges (RSPLIB arbitrates by the lowest id only
# between takeovers already running). PEs whose static registrar is B ($52, $62) may
# instead re-register at the restarted B before that.
if wait_hs 40 homes_among takeover-A "2 3" "2002|3003" 51 52 61 62; then
  pass "(c) RSPLIB's registrars took over every PE of our A (RSPLIB's and ours); B and D agree"
else
  fail "(c) RSPLIB's registrars took over every PE of our A (RSPLIB's and ours); B and D agree"
  for f in "$OUT"/takeover-A-h*.hs; do echo "    $(basename "$f"):"; show "$f"; done
fi
check "(c) an RSPLIB registrar logs the completed takeover of our A" \
  grep -q 'Takeover of peer \$00001001 completed' "$OUT/c-B2.log" "$OUT/c-D.log"
taker=$(awk '$2 == "00000061" { print $3 }' "$OUT/takeover-A-h3-rsplib.hs" 2>/dev/null)
check "(c) our PE \$61 (registrar A only) accepted RSPLIB's \$${taker:-?} as its new home (H-bit keep-alive on its ASAP port)" \
  grep -q "home registrar changed: .* -> \\\$${taker:-none}" "$OUT/c-pe61.log"

# Our registrar joining RSPLIB's: A restarts with B and D as static peers and downloads the
# handlespace from one of them (its delayed SACK during the download included). PEs whose
# only registrar is A may re-register there meanwhile: any of the three may be a PE's home.
sleep 6
log "restarting A (ours): its mentor is an RSPLIB registrar"
our_registrar c-A2 1 0x1001 2 3
check "(c) A listens again" registrar_up 1
check "(c) restarted A downloaded the handlespace from an RSPLIB mentor (B or D)" \
  wait_for 20 grep -Eq 'start-up done: [0-9]+ PEs downloaded from mentor \$0000(2002|3003)' "$OUT/c-A2.log"
if wait_hs 40 homes_among restart-A "1 2 3" "1001|2002|3003" 51 52 61 62; then
  pass "(c) restarted A, B and D agree on the 4 PEs (our and RSPLIB's hsdump)"
else
  fail "(c) restarted A, B and D agree on the 4 PEs (our and RSPLIB's hsdump)"
  for f in "$OUT"/restart-A-h*.hs; do echo "    $(basename "$f"):"; show "$f"; done
fi
stop_all
sleep 1

# ======================================================================================
log "--- (d) our rspterminal, RSPLIB registrar and RSPLIB echo PEs"
rsplib_registrar d-pr 2 0x2002
check "(d) RSPLIB's registrar listens" registrar_up 2
rsplib_pe d-pe71 71 2
rsplib_pe d-pe72 72 2
check "(d) both RSPLIB PEs registered" \
  wait_hs 30 hs_is hs_rsplib h5 "$H2:9901" "$OUT/d-reg.hs" "$(pe_line 71 2002)" "$(pe_line 72 2002)"
mkfifo "$OUT/d-term.in"
start_stdin d-term h5 "$OUT/d-term.in" "$BIN/rspterminal" -registrar="$H2:3863" \
  -transport=sctp -asapannounce=off "${OUR_LOG[@]}"
exec 3>"$OUT/d-term.in"
sent=0
send_lines() {
  local i
  for ((i = 0; i < $1; i++)); do
    sent=$((sent + 1))
    echo "line $sent" >&3
    wait_for 3 grep -q "> line $sent\$" "$OUT/d-term.out" || true
  done
}
send_lines 10
serving=$(answers "$OUT/d-term.out" | tail -n 1 | cut -d' ' -f1 | sed 's/^0*//')
check "(d) our terminal got echoes from an RSPLIB PE (\$${serving:-none})" \
  eval "[ '$serving' = 71 ] || [ '$serving' = 72 ]"
sent=$((sent + 1))
echo "line $sent" >&3
[ -n "$serving" ] && kill9 "d-pe$serving"
send_lines 10
exec 3>&-
wait_exit d-term 30
check "(d) our rspterminal exits 0 at the end of input (rc $EXIT_RC)" test "$EXIT_RC" = 0
check "(d) all $sent lines echoed exactly once across the failover between RSPLIB PEs" \
  all_echoed_once "$OUT/d-term.out" "$sent" line
check "(d) our terminal reports 1 failover" \
  grep -q "$sent line(s) sent, $sent answer(s), 1 failover(s)" "$OUT/d-term.log"
survivor=$([ "$serving" = 71 ] && echo 72 || echo 71)
check "(d) RSPLIB's registrar dropped the dead PE" \
  wait_hs 20 hs_is hs_rsplib h5 "$H2:9901" "$OUT/d-after.hs" "$(pe_line "$survivor" 2002)"

summary
