#!/usr/bin/env bash
# Our programs only, over kernel SCTP, in the VM (sctp-vm run --net=ns:5):
#   registrars PR1..PR3 ($1001..$1003) on h1..h3, peered statically;
#   echo PEs $21..$25 on h4 registered at PR1, PR2, PR3, PR1, PR2;
#   rspterminal on h5 fed numbered lines.
# 1. All three registrars hold the same 5 PEs, each owned by its registrar.
# 2. The serving PE is SIGKILLed with a line in flight: the terminal fails over, no line is
#    lost or answered twice; the registrars drop the dead PE.
# 3. PR1 is SIGKILLed: PR2/PR3 take its PEs over (our hsdump against each live registrar;
#    the PEs log their new home) and the pool is still served.
# 4. PR1 restarts: it downloads the handlespace from a mentor and all three agree.
source "$(dirname "$0")/lib.sh"

PR_ADDR=([1]=$H1 [2]=$H2 [3]=$H3)
PR_ID=([1]=0x1001 [2]=0x1002 [3]=0x1003)

# our_registrar N: starts PRn on hn, statically peered with the two others.
our_registrar() {
  local n=$1 peers=() m
  for m in 1 2 3; do ((m != n)) && peers+=("-peer=${PR_ADDR[m]}:9901"); done
  start "pr$n" "h$n" "$BIN/rspregistrar" -identifier="${PR_ID[n]}" \
    -asap="${PR_ADDR[n]}:3863" -enrp="${PR_ADDR[n]}:9901" -transport=sctp \
    "${FAST_TIMERS[@]}" "${peers[@]}" -loglevel=3 -logcolor=off -quiet
}

# listening HOST PORT: an SCTP socket listens on PORT on HOST.
listening() { ip netns exec "$1" ss -Hln --sctp 2>/dev/null | grep -q ":$2\b"; }

# our_pe ID N: echo PE with identifier ID (hex digits) registered at PRn only.
our_pe() {
  start "pe$1" h4 "$BIN/rspserver" -echo -identifier="0x$1" \
    -registrar="${PR_ADDR[$2]}:3863" -transport=sctp -asapannounce=off \
    -loglevel=3 -logcolor=off -quiet
}

# hs_all FILE_PREFIX EXPECTED...: every live registrar's dump equals EXPECTED.
hs_all() {
  local prefix=$1 n
  shift
  for n in 1 2 3; do
    running "pr$n" || continue
    hs_is hs_ours h5 "${PR_ADDR[n]}:9901" "$OUT/$prefix-pr$n.hs" "$@" || return 1
  done
}

setup
for n in 1 2 3; do our_registrar $n; done
for n in 1 2 3; do
  check "PR$n listens on ${PR_ADDR[n]}:3863 and :9901 (SCTP)" \
    wait_for 20 eval "listening h$n 3863 && listening h$n 9901"
done

declare -A HOME_OF=([21]=1001 [22]=1002 [23]=1003 [24]=1001 [25]=1002)
our_pe 21 1
our_pe 22 2
our_pe 23 3
our_pe 24 1
our_pe 25 2
expected=()
for pe in 21 22 23 24 25; do expected+=("EchoPool 000000$pe 0000${HOME_OF[$pe]}"); done
if wait_hs 40 hs_all start "${expected[@]}"; then
  pass "all three registrars hold PEs \$21..\$25, each owned by the registrar it registered at"
else
  fail "all three registrars hold PEs \$21..\$25, each owned by the registrar it registered at"
  for n in 1 2 3; do echo "  PR$n:"; show "$OUT/start-pr$n.hs"; done
fi

# --- 2. PE failure under a running pool user -------------------------------------------
mkfifo "$OUT/term1.in"
start_stdin term1 h5 "$OUT/term1.in" "$BIN/rspterminal" -poolhandle=EchoPool \
  -registrar="$H1:3863" -registrar="$H2:3863" -registrar="$H3:3863" \
  -transport=sctp -asapannounce=off -loglevel=3 -logcolor=off
exec 3>"$OUT/term1.in"
sent=0
# send_lines N FD OUTFILE: sends N more numbered lines, each after the previous answer
# (at most 3 s each).
send_lines() {
  local i
  for ((i = 0; i < $1; i++)); do
    sent=$((sent + 1))
    echo "line $sent" >&"$2"
    wait_for 3 grep -q "> line $sent\$" "$3" || true
  done
}
send_lines 10 3 "$OUT/term1.out"
serving=$(answers "$OUT/term1.out" | tail -n 1 | cut -d' ' -f1 | sed 's/^0*//')
check "the terminal got answers before the PE failure (serving PE \$${serving:-none})" \
  test -n "$serving"
sent=$((sent + 1))
echo "line $sent" >&3
if [ -n "$serving" ] && running "pe$serving"; then kill9 "pe$serving"; fi
send_lines 20 3 "$OUT/term1.out"
exec 3>&-
wait_exit term1 30
check "rspterminal exits 0 at the end of input once everything is answered (rc $EXIT_RC)" \
  test "$EXIT_RC" = 0
check "every one of the $sent lines was echoed exactly once across the failover" \
  all_echoed_once "$OUT/term1.out" "$sent" line
after=$(answers "$OUT/term1.out" | awk -v s="$serving" '
  { id = $1; sub(/^0+/, "", id) } id != s { seen = 1 } seen { print id }' | sort -u)
check "after the kill another PE answers, never the dead one (answered by: $(echo $after))" \
  eval "[ -n \"\$after\" ] && ! grep -qx \"$serving\" <<<\"\$after\""
check "rspterminal reports $sent lines, $sent answers, 1 failover" \
  grep -q "$sent line(s) sent, $sent answer(s), 1 failover(s)" "$OUT/term1.log"

[ -n "$serving" ] && unset "HOME_OF[$serving]"
expected=()
for pe in "${!HOME_OF[@]}"; do expected+=("EchoPool 000000$pe 0000${HOME_OF[$pe]}"); done
check "the dead PE \$$serving is removed from every registrar" \
  wait_hs 30 hs_all pe-kill "${expected[@]}"

# --- 3. Registrar failure: takeover ------------------------------------------------------
orphans=()
for pe in "${!HOME_OF[@]}"; do [ "${HOME_OF[$pe]}" = 1001 ] && orphans+=("$pe"); done
log "killing PR1, home of PEs ${orphans[*]}"
kill9 pr1
# taken_over: PR2's and PR3's dumps are identical, hold the live PEs, none owned by PR1, and
# the PEs of PR2/PR3 kept their home.
taken_over() {
  hs_ours h5 "$H2:9901" "$OUT/takeover-pr2.hs" || return 1
  hs_ours h5 "$H3:9901" "$OUT/takeover-pr3.hs" || return 1
  diff -q "$OUT/takeover-pr2.hs" "$OUT/takeover-pr3.hs" >/dev/null || return 1
  [ "$(wc -l <"$OUT/takeover-pr2.hs")" = "${#HOME_OF[@]}" ] || return 1
  local pool id home
  while read -r pool id home; do
    id=${id#000000}
    [ -n "${HOME_OF[$id]:-}" ] || return 1
    case ${HOME_OF[$id]} in
      1001) [ "$home" = 00001002 ] || [ "$home" = 00001003 ] || return 1 ;;
      *) [ "$home" = "0000${HOME_OF[$id]}" ] || return 1 ;;
    esac
  done <"$OUT/takeover-pr2.hs"
}
if wait_hs 40 taken_over; then
  pass "PR2 and PR3 agree: PR1's PEs (${orphans[*]}) taken over, the others unchanged"
else
  fail "PR2 and PR3 agree: PR1's PEs (${orphans[*]}) taken over, the others unchanged"
  echo "  PR2:"; show "$OUT/takeover-pr2.hs"; echo "  PR3:"; show "$OUT/takeover-pr3.hs"
fi
while read -r pool id home; do HOME_OF[${id#000000}]=${home#0000}; done <"$OUT/takeover-pr2.hs"
for pe in "${orphans[@]}"; do
  check "PE \$$pe adopted its new home \$0000${HOME_OF[$pe]} (keep-alive with H bit)" \
    wait_for 10 grep -q "home registrar changed: .* -> \$0000${HOME_OF[$pe]}" "$OUT/pe$pe.log"
done

mkfifo "$OUT/term2.in"
start_stdin term2 h5 "$OUT/term2.in" "$BIN/rspterminal" -poolhandle=EchoPool \
  -registrar="$H2:3863" -registrar="$H3:3863" -transport=sctp -asapannounce=off \
  -loglevel=3 -logcolor=off
exec 4>"$OUT/term2.in"
sent=0
send_lines 5 4 "$OUT/term2.out"
exec 4>&-
wait_exit term2 30
check "the pool is still served after the takeover (5 lines echoed, rc $EXIT_RC)" \
  eval "[ $EXIT_RC = 0 ] && all_echoed_once '$OUT/term2.out' 5 line"

# --- 4. Registrar restart: handlespace download ---------------------------------------
our_registrar 1
wait_for 20 eval "listening h1 3863 && listening h1 9901"
expected=()
for pe in "${!HOME_OF[@]}"; do expected+=("EchoPool 000000$pe 0000${HOME_OF[$pe]}"); done
if wait_hs 40 hs_all restart "${expected[@]}"; then
  pass "restarted PR1 downloaded the handlespace: all three registrars agree"
else
  fail "restarted PR1 downloaded the handlespace: all three registrars agree"
  for n in 1 2 3; do echo "  PR$n:"; show "$OUT/restart-pr$n.hs"; done
fi
check "PR1 logs the download from its mentor" \
  grep -q "PEs downloaded from mentor" "$OUT/pr1.log"

summary
