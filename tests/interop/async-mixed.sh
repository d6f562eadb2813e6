#!/usr/bin/env bash
# Mixed deployments of the two drivers over kernel SCTP, in the VM (sctp-vm run --net=ns:5):
# the async driver's examples (rserpool-async-std: echo_pe, registrar) with our mio programs
# (rspregistrar, rspserver -echo, rspterminal, hsdump) and RSPLIB's.
#
#   h1: PR1 = our mio rspregistrar $1001     h2: AR = the async registrar example $2002
#   h3: PR3 = our mio rspregistrar $3003     (PR1, AR, PR3 peered statically over ENRP)
#   h4: async echo_pe $31 at PR1, $32 at AR (pool AsyncPool), $33 at RSPLIB's registrar
#       (pool RsplibPool); our mio rspserver -echo $41 at AR (pool MioPool)
#   h5: RSPLIB's rspregistrar RR $5005 (alone), the terminals, hsdump
#
# 1. PR1, AR and PR3 hold the same handlespace (our hsdump against each), RR holds $33
#    (RSPLIB's hsdump).
# 2. Echoes: our rspterminal and RSPLIB's rspterminal through PR1/PR3 get AsyncPool's async
#    PEs; our rspterminal through the async registrar gets the mio PE $41; RSPLIB's and our
#    rspterminal through RSPLIB's registrar get the async PE $33.
# 3. PR1 is SIGKILLed: AR or PR3 takes the async PE $31 over (ENRP takeover, then a
#    keep-alive with the H bit to the PE's ASAP endpoint: the port its registration came
#    from); the PE logs its new home; the pool is still served.
# 4. AR (the async registrar) is SIGKILLed: PR3 takes over every PE AR was home of (async
#    $32, mio $41) and the pools are still served.
source "$(dirname "$0")/lib.sh"

RR=$H5
REG_ADDR=([1]=$H1 [2]=$H2 [3]=$H3)
OUR_LOG=(-loglevel=3 -logcolor=off)
RSPLIB_LOG=(-loglevel=3 -logcolor=off)

for b in echo_pe registrar; do
  [ -x "$BIN/examples/$b" ] || {
    echo "$SCENARIO: $BIN/examples/$b missing (cargo build --release -p rserpool-async-std --examples)" >&2
    exit 2
  }
done

listening() { ip netns exec "$1" ss -Hln --sctp 2>/dev/null | grep -q ":$2\b"; }
registrar_up() { wait_for 20 eval "listening h$1 3863 && listening h$1 9901"; }

# peers_of N: -peer= options (or --peer ADDR for the async registrar, with ASYNC=1) for the
# two other registrars of PR1, AR, PR3.
peers_of() {
  local m
  for m in 1 2 3; do
    ((m == $1)) && continue
    if [ "${ASYNC:-}" = 1 ]; then echo "--peer ${REG_ADDR[m]}:9901"; else echo "-peer=${REG_ADDR[m]}:9901"; fi
  done
}

# our_registrar NAME N ID: our mio registrar on hN.
our_registrar() {
  # shellcheck disable=SC2046
  start "$1" "h$2" "$BIN/rspregistrar" -identifier="$3" -asap="${REG_ADDR[$2]}:3863" \
    -enrp="${REG_ADDR[$2]}:9901" -transport=sctp -asapannounce=off -enrpannounce=off \
    "${FAST_TIMERS[@]}" $(peers_of "$2") "${OUR_LOG[@]}" -quiet
}

# async_registrar NAME N ID: the async registrar example on hN (SCTP and the TCP mapping).
async_registrar() {
  # shellcheck disable=SC2046
  start "$1" "h$2" "$BIN/examples/registrar" --identifier "$3" --asap "${REG_ADDR[$2]}:3863" \
    --enrp "${REG_ADDR[$2]}:9901" --fast-timers $(ASYNC=1 peers_of "$2")
}

# async_pe NAME ID POOL REGISTRAR: the async echo_pe example on h4 over kernel SCTP.
async_pe() {
  start "$1" h4 "$BIN/examples/echo_pe" --identifier "$2" --pool "$3" \
    --registrar "$4:3863" --listen "$H4:0"
}

# our_terminal NAME REGISTRAR POOL PREFIX COUNT: our rspterminal on h5, fed "PREFIX 1".."PREFIX
# COUNT", each after the previous answer (at most 3 s each); returns when it has exited.
our_terminal() {
  local name=$1 reg=$2 pool=$3 prefix=$4 count=$5 i
  mkfifo "$OUT/$name.in"
  start_stdin "$name" h5 "$OUT/$name.in" "$BIN/rspterminal" -poolhandle="$pool" \
    -registrar="$reg:3863" -transport=sctp -asapannounce=off "${OUR_LOG[@]}"
  exec 5>"$OUT/$name.in"
  for ((i = 1; i <= count; i++)); do
    echo "$prefix $i" >&5
    wait_for 3 grep -q "> $prefix $i\$" "$OUT/$name.out" || true
  done
  exec 5>&-
  wait_exit "$name" 30
}

# rsplib_terminal NAME REGISTRAR POOL PREFIX COUNT: RSPLIB's rspterminal on h5, fed lines half
# a second apart, stopped once all are answered (it never exits at the end of its input).
rsplib_terminal() {
  local name=$1 reg=$2 pool=$3 prefix=$4 count=$5 i
  mkfifo "$OUT/$name.in"
  start_stdin "$name" h5 "$OUT/$name.in" stdbuf -oL rspterminal -poolhandle="$pool" \
    -registrar="$reg:3863" -asapannounce=off "${RSPLIB_LOG[@]}"
  exec 5>"$OUT/$name.in"
  for ((i = 1; i <= count; i++)); do
    echo "$prefix $i" >&5
    sleep 0.5
  done
  wait_for 15 all_echoed_once "$OUT/$name.out" "$count" "$prefix" >/dev/null
  exec 5>&-
  stop "$name"
}

# answered_only_by FILE IDS...: every answer in FILE came from one of the PEs IDS (hex, no
# leading zeros), and there is at least one.
answered_only_by() {
  local file=$1 ids
  shift
  ids=$(answers "$file" | cut -d' ' -f1 | sed 's/^0*//' | sort -u)
  [ -n "$ids" ] || return 1
  local id ok
  for id in $ids; do
    ok=0
    for want; do [ "$id" = "$want" ] && ok=1; done
    ((ok)) || return 1
  done
}

# terminal_ok NAME PREFIX COUNT IDS...: all lines echoed once, only by the PEs IDS.
terminal_ok() {
  local name=$1 prefix=$2 count=$3
  shift 3
  all_echoed_once "$OUT/$name.out" "$count" "$prefix" && answered_only_by "$OUT/$name.out" "$@"
}

# hs_all PREFIX REGS EXPECTED...: our hsdump against each registrar of REGS (host numbers,
# e.g. "1 2 3") equals EXPECTED.
hs_all() {
  local prefix=$1 regs=$2 n
  shift 2
  for n in $regs; do
    hs_is hs_ours h5 "${REG_ADDR[n]}:9901" "$OUT/$prefix-h$n.hs" "$@" || return 1
  done
}
show_all() {
  local prefix=$1 n
  for n in $2; do echo "  h$n:"; show "$OUT/$prefix-h$n.hs"; done
}

# home_of FILE ID: the home registrar (8 hex digits) of PE ID in a normalised dump.
home_of() { awk -v id="$(printf '%08x' "0x$2")" '$2 == id { print $3 }' "$1"; }

setup

# --- 1. the deployment ------------------------------------------------------------------
our_registrar pr1 1 0x1001
async_registrar ar 2 0x2002
our_registrar pr3 3 0x3003
start rr h5 rspregistrar -identifier=0x5005 -asap="$RR:3863" -enrp="$RR:9901" \
  -asapannounce=off -enrpannounce=off "${FAST_TIMERS[@]}" "${RSPLIB_LOG[@]}" -quiet
for n in 1 2 3 5; do
  check "registrar on h$n listens on :3863 and :9901 (SCTP)" registrar_up "$n"
done
check "the async registrar runs as \$00002002 with SCTP listeners" \
  wait_for 10 grep -q 'registrar PR\$00002002' "$OUT/ar.log"

async_pe pe31 31 AsyncPool "$H1"
async_pe pe32 32 AsyncPool "$H2"
async_pe pe33 33 RsplibPool "$RR"
start pe41 h4 "$BIN/rspserver" -echo -identifier=0x41 -poolhandle=MioPool \
  -registrar="$H2:3863" -transport=sctp -asapannounce=off "${OUR_LOG[@]}" -quiet
for pe in 31 32 33; do
  check "async PE \$$pe registered over SCTP" wait_for 20 grep -q "registered in" "$OUT/pe$pe.log"
done

EXPECTED=("AsyncPool 00000031 00001001" "AsyncPool 00000032 00002002" "MioPool 00000041 00002002")
if wait_hs 40 hs_all start "1 2 3" "${EXPECTED[@]}"; then
  pass "PR1, the async registrar and PR3 agree: \$31 at PR1, \$32 and mio \$41 at the async registrar"
else
  fail "PR1, the async registrar and PR3 agree: \$31 at PR1, \$32 and mio \$41 at the async registrar"
  show_all start "1 2 3"
fi
check "RSPLIB's registrar holds the async PE \$33 (RSPLIB's hsdump)" \
  wait_hs 30 hs_is hs_rsplib h5 "$RR:9901" "$OUT/start-rr.hs" "RsplibPool 00000033 00005005"

# --- 2. echoes ----------------------------------------------------------------------------
our_terminal t-ours-pr1 "$H1" AsyncPool a 5
check "our rspterminal through PR1: 5 lines echoed by the async PEs (rc $EXIT_RC)" \
  eval "[ $EXIT_RC = 0 ] && terminal_ok t-ours-pr1 a 5 31 32"
rsplib_terminal t-rsplib-pr3 "$H3" AsyncPool b 5
check "RSPLIB's rspterminal through PR3: 5 lines echoed by the async PEs" \
  terminal_ok t-rsplib-pr3 b 5 31 32
our_terminal t-ours-ar "$H2" MioPool c 5
check "our rspterminal through the async registrar: 5 lines echoed by mio PE \$41 (rc $EXIT_RC)" \
  eval "[ $EXIT_RC = 0 ] && terminal_ok t-ours-ar c 5 41"
rsplib_terminal t-rsplib-rr "$RR" RsplibPool d 5
check "RSPLIB's rspterminal through RSPLIB's registrar: 5 lines echoed by async PE \$33" \
  terminal_ok t-rsplib-rr d 5 33
our_terminal t-ours-rr "$RR" RsplibPool e 5
check "our rspterminal through RSPLIB's registrar: 5 lines echoed by async PE \$33 (rc $EXIT_RC)" \
  eval "[ $EXIT_RC = 0 ] && terminal_ok t-ours-rr e 5 33"
check "RSPLIB's registrar still holds \$33 (the async PE answers its keep-alives)" \
  hs_is hs_rsplib h5 "$RR:9901" "$OUT/ka-rr.hs" "RsplibPool 00000033 00005005"

# --- 3. PR1 dies: its async PE is taken over ----------------------------------------------
# (the hsdump probes above were short-lived peers: let every registrar drop them first)
sleep 4
kill9 pr1
taken_over_1() {
  hs_ours h5 "$H2:9901" "$OUT/takeover1-h2.hs" || return 1
  hs_ours h5 "$H3:9901" "$OUT/takeover1-h3.hs" || return 1
  diff -q "$OUT/takeover1-h2.hs" "$OUT/takeover1-h3.hs" >/dev/null || return 1
  local h31 h32 h41
  h31=$(home_of "$OUT/takeover1-h2.hs" 31)
  h32=$(home_of "$OUT/takeover1-h2.hs" 32)
  h41=$(home_of "$OUT/takeover1-h2.hs" 41)
  [ "$(wc -l <"$OUT/takeover1-h2.hs")" = 3 ] || return 1
  { [ "$h31" = 00002002 ] || [ "$h31" = 00003003 ]; } && [ "$h32" = 00002002 ] &&
    [ "$h41" = 00002002 ]
}
if wait_hs 40 taken_over_1; then
  home31=$(home_of "$OUT/takeover1-h2.hs" 31)
  pass "the async registrar and PR3 agree: PR1's async PE \$31 taken over by \$$home31, the others unchanged"
else
  home31=
  fail "the async registrar and PR3 agree: PR1's async PE \$31 taken over, the others unchanged"
  show_all takeover1 "2 3"
fi
check "async PE \$31 adopted its new home \$${home31:-?} (keep-alive with the H bit to its ASAP endpoint)" \
  wait_for 10 grep -q "HomeRegistrarChanged .*new: PR\\\$${home31:-none}" "$OUT/pe31.log"
our_terminal t-after1 "$H3" AsyncPool f 5
check "AsyncPool still served through PR3 after the takeover (rc $EXIT_RC)" \
  eval "[ $EXIT_RC = 0 ] && terminal_ok t-after1 f 5 31 32"

# --- 4. the async registrar dies: PR3 takes over async and mio PEs -------------------------
sleep 4
kill9 ar
EXPECTED=("AsyncPool 00000031 00003003" "AsyncPool 00000032 00003003" "MioPool 00000041 00003003")
if wait_hs 40 hs_all takeover2 3 "${EXPECTED[@]}"; then
  pass "PR3 took over every PE of the dead async registrar (async \$32, mio \$41) and holds all three"
else
  fail "PR3 took over every PE of the dead async registrar (async \$32, mio \$41) and holds all three"
  show_all takeover2 3
fi
check "async PE \$32 adopted PR3 as its home (keep-alive with the H bit)" \
  wait_for 10 grep -q 'HomeRegistrarChanged .*new: PR\$00003003' "$OUT/pe32.log"
check "mio PE \$41 adopted PR3 as its home" \
  wait_for 10 grep -q 'home registrar changed: .* -> \$00003003' "$OUT/pe41.log"
our_terminal t-after2 "$H3" AsyncPool g 5
check "AsyncPool still served through PR3 alone (rc $EXIT_RC)" \
  eval "[ $EXIT_RC = 0 ] && terminal_ok t-after2 g 5 31 32"
our_terminal t-after2m "$H3" MioPool h 5
check "MioPool still served through PR3 alone (rc $EXIT_RC)" \
  eval "[ $EXIT_RC = 0 ] && terminal_ok t-after2m h 5 41"

summary
