# Helpers of the service scenarios (services-interop.sh, fractal-interop.sh; sourced after
# lib.sh): our registrar A ($1001) on h1, RSPLIB's registrar B ($2002) on h2, pool elements
# of either implementation on h3/h4 registered at either registrar, clients on h5.

RSPLIB_LOG=(-loglevel=3 -logcolor=off)
OUR_LOG=(-loglevel=3 -logcolor=off)
declare -A REG=([A]=$H1 [B]=$H2)
CLIENT_HOST=h5
declare -A reg_id=([A]=1001 [B]=2002) hs_fn=([A]=hs_ours [B]=hs_rsplib)

listening() { ip netns exec "$1" ss -Hln --sctp 2>/dev/null | grep -q ":$2\b"; }

# strip FILE: the file without colour codes.
strip() { sed 's/\x1b\[[0-9;]*m//g' "$1" 2>/dev/null; }

# start_registrars: starts A and B with the fast timers and checks that both listen.
start_registrars() {
  log "--- registrars: ours (A, h1) and RSPLIB's (B, h2)"
  start reg-A h1 "$BIN/rspregistrar" -identifier=0x1001 -asap="$H1:3863" -enrp="$H1:9901" \
    -transport=sctp "${FAST_TIMERS[@]}" "${OUR_LOG[@]}" -quiet
  start reg-B h2 rspregistrar -identifier=0x2002 -asap="$H2:3863" -enrp="$H2:9901" \
    "${FAST_TIMERS[@]}" "${RSPLIB_LOG[@]}" -quiet
  check "our registrar A listens on $H1:3863" wait_for 20 listening h1 3863
  check "RSPLIB's registrar B listens on $H2:3863" wait_for 20 listening h2 3863
}

# our_pe NAME HOST ID REGISTRAR(A|B) POOL SERVICE-OPTIONS...
our_pe() {
  local name=$1 host=$2 id=$3 reg=$4 pool=$5
  shift 5
  start "$name" "$host" "$BIN/rspserver" "$@" -identifier="0x$id" -poolhandle="$pool" \
    -registrar="${REG[$reg]}:3863" -transport=sctp -asapannounce=off "${OUR_LOG[@]}"
}

# rsplib_pe NAME HOST ID REGISTRAR(A|B) POOL SERVICE-OPTIONS...
rsplib_pe() {
  local name=$1 host=$2 id=$3 reg=$4 pool=$5
  shift 5
  start "$name" "$host" stdbuf -oL rspserver "$@" -identifier="0x$id" -poolhandle="$pool" \
    -registrar="${REG[$reg]}:3863" -asapannounce=off "${RSPLIB_LOG[@]}"
}

# stop_all_pes PHASE: stops the PEs PHASE-h*.
stop_all_pes() { local n; for n in "${!PIDS[@]}"; do if [[ $n == $1-h* ]]; then stop "$n"; fi; done; }

# registered HS-FUNC REGISTRAR FILE POOL ID...: the registrar's handlespace has exactly
# these PEs in POOL.
registered() {
  local fn=$1 reg=$2 file=$3 pool=$4 id lines=()
  shift 4
  for id; do lines+=("$pool 000000$id 0000${reg_id[$reg]}"); done
  "$fn" h5 "${REG[$reg]}:9901" "$file" || return 1
  grep "^$pool " "$file" >"$file.pool"
  expect_hs "$file.pool" "${lines[@]}"
}

# wait_registered WHAT REGISTRAR POOL ID...: check that the PEs are registered (30 s).
wait_registered() {
  local what=$1 reg=$2 pool=$3
  shift 3
  if wait_hs 30 registered "${hs_fn[$reg]}" "$reg" "$OUT/$pool.hs" "$pool" "$@"; then
    pass "$what"
  else
    fail "$what"
    show "$OUT/$pool.hs.raw"
  fi
}
