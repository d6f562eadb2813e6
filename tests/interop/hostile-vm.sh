#!/usr/bin/env bash
# The hostile-input suite over kernel SCTP, our rspregistrar and RSPLIB's rspregistrar
# 3.4.4 side by side in one VM run (docs/security.md has the figures). Run it from the
# repository root:
#
#   cargo build --release -p rserpool-mio --bin rsphostile --bin rspregistrar
#   taskset -c 1 /work/shared/tools/sctp-vm/sctp-vm run --net=ns:3 --timeout=600 -- tests/interop/hostile-vm.sh
#
# Three registrars, one after the other: ours with -peerpolicy=static (only the configured
# peer may change the handlespace over ENRP), ours with the RSPLIB-compatible default
# -peerpolicy=any, and RSPLIB's (installed in the VM as /usr/bin/rspregistrar).
#
# Hosts (network namespaces of `sctp-vm --net=ns:3`, the only addresses used here):
#   h1 10.99.0.11  the registrar under test (restarted by a loop when it dies; its pid in a file)
#   h2 10.99.0.12  rsphostile: the attacker, the legitimate echo PE and the legitimate ENRP peer
#                  (ENRP port 9911, a static peer of both registrars)
# RSPLIB ignores loopback addresses, so nothing here uses 127.0.0.1.
#
# Environment: HOSTILE_BIN (directory of the release binaries, default
# ${CARGO_TARGET_DIR:-target}/release), HOSTILE_OUT (results, default hostile-vm-out),
# HOSTILE_ARGS (extra rsphostile options), HOSTILE_ONLY (ours|any|rsplib: run one of them).
set -u

BIN=${HOSTILE_BIN:-${CARGO_TARGET_DIR:-target}/release}
OUT=${HOSTILE_OUT:-hostile-vm-out}
H1=10.99.0.11
H2=10.99.0.12
PEER_PORT=9911
SEED=5355

die() { echo "hostile-vm: $*" >&2; exit 2; }
[ -x "$BIN/rsphostile" ] || die "no $BIN/rsphostile (cargo build --release -p rserpool-mio --bin rsphostile)"
[ -x "$BIN/rspregistrar" ] || die "no $BIN/rspregistrar (cargo build --release -p rserpool-mio --bin rspregistrar)"
[ -x /usr/bin/rspregistrar ] || die "RSPLIB's rspregistrar (Debian rsplib-registrar) is not installed"
ip netns list | grep -qw h1 && ip netns list | grep -qw h2 || die "needs sctp-vm --net=ns:3"
ip -n h1 -4 addr show dev eth0 | grep -q "$H1/" || die "h1 is not $H1"
ip -n h2 -4 addr show dev eth0 | grep -q "$H2/" || die "h2 is not $H2"
mkdir -p "$OUT"

# run LABEL COMMAND...: the registrar on h1 in a restart loop, the suite from h2.
run() {
  local label=$1; shift
  local pidfile=$OUT/$label.pid stop=$OUT/$label.stop
  rm -f "$pidfile" "$stop" "$OUT/$label.exits"
  ip netns exec h1 bash -c '
    pidfile=$1 stop=$2 exits=$3; shift 3
    while [ ! -e "$stop" ]; do
      "$@" >/dev/null 2>&1 &
      echo $! > "$pidfile"
      wait $!
      rc=$?
      [ -e "$stop" ] && break
      echo "$(date +%s.%N) exit $rc" >> "$exits"
      sleep 0.3
    done' loop "$pidfile" "$stop" "$OUT/$label.exits" "$@" &
  local loop=$!
  sleep 3
  echo "=== $label: $* (pid $(cat "$pidfile" 2>/dev/null))"
  # shellcheck disable=SC2086
  ip netns exec h2 "$BIN/rsphostile" \
    -registrar=$H1:3863 -enrp=$H1:9901 -transport=sctp \
    -registrarpidfile="$pidfile" -restartwait=20000 \
    -local=$H2 -peerport=$PEER_PORT -seed=$SEED -label="$label" -caselog="$OUT/$label.cases" \
    ${HOSTILE_ARGS:-} >"$OUT/$label.txt" 2>"$OUT/$label.err"
  local rc=$?
  touch "$stop"
  kill "$(cat "$pidfile")" 2>/dev/null
  sleep 0.5
  kill -9 "$(cat "$pidfile")" 2>/dev/null
  wait "$loop" 2>/dev/null
  cat "$OUT/$label.txt"
  local deaths=0
  [ -e "$OUT/$label.exits" ] && deaths=$(wc -l < "$OUT/$label.exits")
  echo "=== $label: rsphostile exit $rc; registrar deaths seen by the restart loop: $deaths"
  sleep 2
}

only=${HOSTILE_ONLY:-all}
common="-asap=$H1:3863 -enrp=$H1:9901 -peer=$H2:$PEER_PORT -asapannounce=off -enrpannounce=off -loglevel=0"
# shellcheck disable=SC2086
if [ "$only" = all ] || [ "$only" = ours ]; then
  run ours "$BIN/rspregistrar" $common -transport=sctp -peerpolicy=static
fi
# shellcheck disable=SC2086
if [ "$only" = all ] || [ "$only" = any ]; then
  run ours-peerpolicy-any "$BIN/rspregistrar" $common -transport=sctp -peerpolicy=any
fi
# shellcheck disable=SC2086
if [ "$only" = all ] || [ "$only" = rsplib ]; then
  run rsplib-3.4.4 /usr/bin/rspregistrar $common -quiet
fi
echo "=== verdicts"
grep -h '^VERDICT' "$OUT"/*.txt
