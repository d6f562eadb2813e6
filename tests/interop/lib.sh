# Shared helpers of the interoperability scenarios (sourced, not run). The scenarios run
# inside the SCTP VM with `--net=ns:5`: hosts h1..h5 = 10.99.0.11..15 on the bridge br0.
#
# Environment:
#   RSERPOOL_BIN   directory of our binaries (default: $CARGO_TARGET_DIR/release, else
#                  <repo>/target/release)
#   INTEROP_OUT    where logs and the capture go; must lie under the VM's work directory,
#                  the only directory written back to the host (default: ./interop-out)
#   INTEROP_DECODE=vm  also run check-pcap.sh (tshark + rspwire) on the capture inside the VM
#                  (slow: tshark needs ~11 s to start there); run-all.sh does it on the host.

set -u
shopt -s nullglob

INTEROP_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$INTEROP_DIR/../.." && pwd)
BIN=${RSERPOOL_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release}
SCENARIO=${SCENARIO:-$(basename "$0" .sh)}
OUT=${INTEROP_OUT:-$PWD/interop-out}/$SCENARIO
PCAP=$OUT/$SCENARIO.pcap

# Host addresses (h1..h5).
H1=10.99.0.11 H2=10.99.0.12 H3=10.99.0.13 H4=10.99.0.14 H5=10.99.0.15

# The fast timers of the RSPLIB reference captures (vectors/rsplib-captures/README.md); both
# implementations accept the same option names.
FAST_TIMERS=(
  -serverannouncecycle=1000
  -endpointkeepalivetransmissioninterval=2000
  -endpointkeepalivetimeoutinterval=2000
  -maxbadpereports=1
  -peerheartbeatcycle=1000
  -peermaxtimelastheard=3000
  -peermaxtimenoresponse=2000
  -takeoverexpiryinterval=3000
  -mentordiscoverytimeout=2000
)

declare -A PIDS=()
PASSED=() FAILED=()
T0=${EPOCHREALTIME/,/.}
DUMPCAP_PID=

elapsed() { awk -v a="$T0" -v b="${EPOCHREALTIME/,/.}" 'BEGIN { printf "%6.1f", b - a }'; }
log() { printf '[%ss] %s\n' "$(elapsed)" "$*"; }
pass() { PASSED+=("$1"); log "PASS: $1"; }
fail() { FAILED+=("$1"); log "FAIL: $1"; }
# check "what" command...: PASS if the command succeeds.
check() {
  local what=$1
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}

# wait_for SECONDS command...: polls the command until it succeeds; 1 on timeout.
# POLL_GAP (seconds, default 0.3) between attempts.
wait_for() {
  local limit=$1
  shift
  local end=$((SECONDS + limit))
  until "$@"; do
    ((SECONDS >= end)) && return 1
    sleep "${POLL_GAP:-0.3}"
  done
}

# wait_hs SECONDS command...: wait_for with 1.5 s between attempts, for commands that run
# hsdump: every hsdump becomes a short-lived peer of the registrar it asks (as RSPLIB's does),
# and RSPLIB waits for every peer's Init Takeover Ack.
wait_hs() { POLL_GAP=1.5 wait_for "$@"; }

# setup: checks the environment, creates the output directory, starts the capture.
setup() {
  local missing=()
  for h in h1 h2 h3 h4 h5; do
    ip netns exec "$h" true 2>/dev/null || missing+=("$h")
  done
  if ((${#missing[@]})); then
    echo "$SCENARIO: hosts ${missing[*]} missing: run inside 'sctp-vm run --net=ns:5'" >&2
    exit 2
  fi
  for b in rspregistrar rspserver rspterminal hsdump; do
    [ -x "$BIN/$b" ] || {
      echo "$SCENARIO: $BIN/$b missing (cargo build --release -p rserpool-mio)" >&2
      exit 2
    }
  done
  rm -rf "$OUT"
  mkdir -p "$OUT"
  trap cleanup EXIT
  log "$SCENARIO: output in $OUT, our binaries from $BIN"
  # No segmentation offload: bulk transfers (scripting) would otherwise reach the capture
  # as GSO super-packets, larger than the MTU and with SCTP checksum 0 (the wire never
  # sees them; tshark does not mind, `rspwire pcap` reports bad checksums).
  for h in h1 h2 h3 h4 h5; do
    ip netns exec "$h" ethtool -K eth0 gso off >/dev/null 2>&1
    ip netns exec "$h" ethtool -K eth0 tx-sctp-segmentation off >/dev/null 2>&1
  done
  dumpcap -q -i br0 -w "$PCAP" >"$OUT/dumpcap.log" 2>&1 &
  DUMPCAP_PID=$!
  wait_for 20 test -s "$PCAP" || {
    echo "$SCENARIO: dumpcap did not start: $(cat "$OUT/dumpcap.log")" >&2
    exit 2
  }
  sleep 0.5
}

# start NAME HOST PROGRAM ARGS...: runs PROGRAM on HOST (hN) in the background; output to
# $OUT/NAME.log. The PID (the program itself: ip netns exec execs it) goes to PIDS[NAME].
start() {
  local name=$1 host=$2
  shift 2
  ip netns exec "$host" "$@" >"$OUT/$name.log" 2>&1 &
  PIDS[$name]=$!
}

# start_stdin NAME HOST INPUT PROGRAM ARGS...: as start, standard input from INPUT (a FIFO:
# the program starts once a writer opens it).
start_stdin() {
  local name=$1 host=$2 input=$3
  shift 3
  ip netns exec "$host" "$@" <"$input" >"$OUT/$name.out" 2>"$OUT/$name.log" &
  PIDS[$name]=$!
}

running() { [ -n "${PIDS[$1]:-}" ] && kill -0 "${PIDS[$1]}" 2>/dev/null; }

# kill9 NAME: SIGKILL, as the scenarios demand.
kill9() {
  local pid=${PIDS[$1]:-}
  [ -n "$pid" ] || return 0
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  unset "PIDS[$1]"
  log "killed $1 (SIGKILL)"
}

# stop NAME: SIGTERM, SIGKILL after 5 s.
stop() {
  local pid=${PIDS[$1]:-}
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null
  local end=$((SECONDS + 5))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < end)); do sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  unset "PIDS[$1]"
}

# wait_exit NAME SECONDS: waits for the program to end by itself; its exit status goes to
# EXIT_RC (124 if it had to be killed, 255 if it was not running).
EXIT_RC=
wait_exit() {
  local pid=${PIDS[$1]:-} end=$((SECONDS + $2))
  EXIT_RC=255
  [ -n "$pid" ] || return 0
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < end)); do sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    EXIT_RC=124
  else
    EXIT_RC=0
    wait "$pid" 2>/dev/null || EXIT_RC=$?
  fi
  unset "PIDS[$1]"
}

stop_all() {
  local n
  for n in "${!PIDS[@]}"; do kill -TERM "${PIDS[$n]}" 2>/dev/null; done
  sleep 0.5
  for n in "${!PIDS[@]}"; do stop "$n"; done
}

stop_capture() {
  [ -n "$DUMPCAP_PID" ] || return 0
  sleep 0.5
  kill -INT "$DUMPCAP_PID" 2>/dev/null
  wait "$DUMPCAP_PID" 2>/dev/null
  DUMPCAP_PID=
}

cleanup() {
  stop_all
  stop_capture
}

# --- handlespace dumps, normalised to sorted lines "POOL PE-ID HOME-ID" (hex, 8 digits) ---

# Our hsdump's output (`-handlespaceonly`).
normalise_ours() {
  awk '
    /^Pool "/ { p = $0; sub(/^Pool "/, "", p); sub(/": .*$/, "", p); next }
    /^  PE \$/ {
      id = $2; sub(/^\$/, "", id); sub(/:$/, "", id)
      home = $4; sub(/^\$/, "", home); sub(/,$/, "", home)
      print p, tolower(id), tolower(home)
    }' | sort
}

# RSPLIB's hsdump output: the "*-- Index:" part.
normalise_rsplib() {
  sed 's/\x1b\[[0-9;]*m//g' | awk '
    /^\*-- Index:/ { on = 1; next }
    /^\*-- / { on = 0 }
    !on { next }
    /^ \+-- Pool "/ { p = $0; sub(/^ \+-- Pool "/, "", p); sub(/", Policy.*$/, "", p); next }
    /- idx:#/ { id = $3; sub(/^\$/, "", id); next }
    /home=\$/ && id != "" {
      h = $0; sub(/^.*home=\$/, "", h); sub(/ .*$/, "", h)
      print p, tolower(id), tolower(h); id = ""
    }' | sort
}

# hs_ours HOST ADDR:PORT FILE: our hsdump from HOST; normalised handlespace to FILE.
hs_ours() {
  ip netns exec "$1" timeout 15 "$BIN/hsdump" "$2" -transport=sctp -timeout=3000 \
    -handlespaceonly >"$3.raw" 2>&1 || return 1
  normalise_ours <"$3.raw" >"$3"
}

# hs_rsplib HOST ADDR:PORT FILE: RSPLIB's hsdump from HOST; normalised handlespace to FILE.
hs_rsplib() {
  ip netns exec "$1" timeout 15 hsdump "$2" >"$3.raw" 2>&1 || return 1
  grep -q '^Handlespace' "$3.raw" || return 1
  normalise_rsplib <"$3.raw" >"$3"
}

# expect_hs FILE "POOL PE HOME" ...: FILE holds exactly these lines (any order).
expect_hs() {
  local file=$1
  shift
  [ -f "$file" ] || return 1
  # (no process substitution: the VM has no /dev/fd)
  if (($#)); then printf '%s\n' "$@"; fi | sort >"$file.expected"
  cmp -s "$file.expected" "$file"
}

# hs_is FUNC HOST ADDR FILE LINES...: one dump (hs_ours or hs_rsplib), compared.
hs_is() {
  local fn=$1 host=$2 addr=$3 file=$4
  shift 4
  "$fn" "$host" "$addr" "$file" && expect_hs "$file" "$@"
}

# show FILE: prints a file indented (for failures).
show() { sed 's/^/    | /' "$1" 2>/dev/null; }

# --- terminals -------------------------------------------------------------------------

# answers FILE: the answers in a terminal's output as "PE-ID TEXT" (colour codes removed).
answers() {
  sed 's/\x1b\[[0-9;]*m//g' "$1" | sed -n 's/^from PE \$\([0-9a-fA-F]*\)> \(.*\)$/\1 \2/p'
}

# all_echoed_once FILE N PREFIX: the answers contain "PREFIX 1".."PREFIX N" exactly once each
# (RSPLIB's rspterminal may join lines read together: "a.b" counts as both).
all_echoed_once() {
  local file=$1 n=$2 prefix=$3
  answers "$file" | cut -d' ' -f2- | tr '.' '\n' | awk -v n="$n" -v pfx="$prefix" '
    { seen[$0]++ }
    END {
      bad = 0
      for (i = 1; i <= n; i++) {
        k = pfx " " i
        if (seen[k] != 1) { printf "    %s: answered %d times\n", k, seen[k]; bad = 1 }
      }
      exit bad
    }'
}

# --- the end ---------------------------------------------------------------------------

# summary: stops everything, prints the results, optionally checks the capture; exits.
summary() {
  stop_all
  stop_capture
  trap - EXIT
  if [ "${INTEROP_DECODE:-}" = vm ]; then
    check "capture decodes cleanly (tshark, rspwire pcap)" \
      "$INTEROP_DIR/check-pcap.sh" "$PCAP" "$BIN/rspwire"
  fi
  echo
  echo "=== $SCENARIO: ${#PASSED[@]} passed, ${#FAILED[@]} failed (capture: $PCAP)"
  local c
  for c in "${PASSED[@]}"; do echo "  PASS  $c"; done
  for c in "${FAILED[@]}"; do echo "  FAIL  $c"; done
  if ((${#FAILED[@]})); then
    echo "=== $SCENARIO: FAIL"
    exit 1
  fi
  echo "=== $SCENARIO: PASS"
  exit 0
}
