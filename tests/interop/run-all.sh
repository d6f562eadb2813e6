#!/usr/bin/env bash
# run-all.sh [--no-build] [SCENARIO...]: runs the interoperability scenarios on the host.
#   1. builds our binaries in release (cargo build --release -p rserpool-mio --bins, and the
#      async driver's examples: -p rserpool-async-std --examples);
#   2. runs each scenario (default: ours-sctp rsplib-interop services-interop fractal-interop async-mixed) in the SCTP VM
#      (sctp-vm run --net=ns:5), results under $CARGO_TARGET_DIR/interop (default
#      target/interop): one directory per scenario with logs, hsdump outputs and the capture;
#   3. checks each capture on the host with check-pcap.sh (tshark + rspwire pcap);
#   4. prints a summary; exit 0 if everything passed, 1 otherwise.
# Without a usable VM (no sctp-vm, not root, `sctp-vm setup` fails, or neither the default
# UML nor a newer one (newer-uml.sh) boots on this host) it prints a note and exits 3
# (skipped): the scenarios need kernel SCTP, which only the VM provides here.
# Environment: SCTP_VM (the sctp-vm command), INTEROP_TIMEOUT (seconds per scenario, 420),
# INTEROP_PROFILE (release, default, or debug).
set -u
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
target=${CARGO_TARGET_DIR:-$repo/target}
case $target in /*) ;; *) target=$repo/$target ;; esac

build=1
scenarios=()
for a in "$@"; do
  case $a in
    --no-build) build=0 ;;
    -h | --help)
      sed -n '2,13p' "$0"
      exit 0
      ;;
    *) scenarios+=("${a%.sh}") ;;
  esac
done
((${#scenarios[@]})) || scenarios=(ours-sctp rsplib-interop services-interop fractal-interop async-mixed)

skip() {
  echo "interop: skipped: $*"
  exit 3
}
vm=${SCTP_VM:-$(command -v sctp-vm || echo /work/shared/tools/sctp-vm/sctp-vm)}
[ -x "$vm" ] || skip "no sctp-vm (looked for '$vm'; set SCTP_VM)"
[ "$(id -u)" = 0 ] || skip "sctp-vm needs root"
if ! setup_log=$("$vm" setup 2>&1); then
  printf '%s\n' "$setup_log" | tail -n 5
  skip "sctp-vm setup failed"
fi
# Does the VM boot here? Debian 12's UML 6.1 does not on some hosts (kernel 6.18 with an AMX
# CPU: "ptrace set fp regs failed, errno = 14"); then a newer UML from Debian sid is tried
# (newer-uml.sh; RSERPOOL_NEWER_UML=0 skips that).
if ! boot_log=$("$vm" run --net=lo --timeout=60 -- true 2>&1); then
  printf '%s\n' "$boot_log" | grep -v '^ [0-9a-f]' | tail -n 6
  if [ "${RSERPOOL_NEWER_UML:-1}" = 1 ] && uml_bin=$("$here/newer-uml.sh") &&
    PATH="$uml_bin:$PATH" "$vm" run --net=lo --timeout=60 -- true >/dev/null 2>&1; then
    export PATH="$uml_bin:$PATH"
    echo "interop: the default UML does not boot here; using $uml_bin/linux.uml (newer-uml.sh)"
  else
    skip "the SCTP VM does not boot on this host"
  fi
fi
command -v tshark >/dev/null || {
  echo "interop: tshark missing on the host (apt-get install tshark): the capture checks need it"
  exit 1
}

# INTEROP_PROFILE=debug uses (and builds) the debug binaries instead: after `cargo test
# --workspace` they are already built (48 s instead of minutes). Only for quick checks: with
# debug binaries the CalcApp PEs compute so slowly that a services-interop check (a job under
# way completes at the other PE within the client's run time) failed once in one try.
profile=${INTEROP_PROFILE:-release}
case $profile in
  release) profile_flag=(--release) ;;
  debug) profile_flag=() ;;
  *) echo "interop: INTEROP_PROFILE must be release or debug"; exit 1 ;;
esac
t0=$SECONDS
if ((build)); then
  echo "interop: building the binaries ($profile)"
  cargo build "${profile_flag[@]}" -p rserpool-mio --bins || exit 1
  cargo build "${profile_flag[@]}" -p rserpool-async-std --examples || exit 1
fi
echo "interop: build took $((SECONDS - t0)) s"
export RSERPOOL_BIN=$target/$profile
work=$target/interop
case $work in *[[:space:],]*) echo "interop: '$work' has a space or comma (sctp-vm cannot use it)"; exit 1 ;; esac
mkdir -p "$work"
export INTEROP_OUT=$work/interop-out

declare -A result decode secs
failed=0
for s in "${scenarios[@]}"; do
  [ -x "$here/$s.sh" ] || {
    echo "interop: no scenario $s"
    result[$s]=MISSING
    failed=1
    continue
  }
  echo
  echo "interop: === $s (in the VM)"
  t=$SECONDS
  (cd "$work" && "$vm" run --net=ns:5 --timeout="${INTEROP_TIMEOUT:-420}" -- "$here/$s.sh")
  rc=$?
  secs[$s]=$((SECONDS - t))
  case $rc in
    0) result[$s]=PASS ;;
    124) result[$s]="FAIL (timed out)" ;;
    125) result[$s]="FAIL (the VM stopped without a result)" ;;
    *) result[$s]="FAIL (exit $rc)" ;;
  esac
  [ "$rc" = 0 ] || failed=1
  pcap=$INTEROP_OUT/$s/$s.pcap
  echo "interop: --- capture checks of $s (host)"
  if "$here/check-pcap.sh" "$pcap" "$RSERPOOL_BIN/rspwire"; then
    decode[$s]=PASS
  else
    decode[$s]=FAIL
    failed=1
  fi
done

echo
echo "interop: summary (results in $INTEROP_OUT, total $((SECONDS - t0)) s)"
printf '  %-16s %-34s %-8s %s\n' scenario result capture time
for s in "${scenarios[@]}"; do
  printf '  %-16s %-34s %-8s %s\n' "$s" "${result[$s]}" "${decode[$s]:--}" "${secs[$s]:-?} s"
done
if ((failed)); then
  echo "interop: FAIL"
  exit 1
fi
echo "interop: PASS"
