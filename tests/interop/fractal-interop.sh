#!/usr/bin/env bash
# The fractal generator service against RSPLIB 3.4.4 over kernel SCTP, in the VM
# (sctp-vm run --net=ns:5). Our registrar A ($1001) on h1, RSPLIB's registrar B ($2002) on h2
# (they find each other by their multicast announces); pool elements on h3 and h4, pool users
# on h5. Every phase uses pools of its own, each pool served by one implementation only.
#
# RSPLIB's `fractalpooluser` is a Qt GUI program; it runs here with Qt's `offscreen` platform.
# It saves no images (its -imagestorageprefix= is unused) and its Component Status reports name
# its session's status only while exactly one session exists (not between images), so what it
# accepted is read from its behaviour: with one session per image it sends the PARAMETER of
# the next image only after the end marker of the current one arrived (until then it fails
# over with its cookie, printing "FAILOVER (cookie=...)", and the next PE resumes mid-image),
# and it prints "ERROR: Invalid data block received!" for a DATA message it cannot paint.
# Our PEs log every image they start ("ImageStarted { size, from: (x, y) }", (0, 0) for a
# PARAMETER, the cookie's position for a cookie echo) and finish ("ImageDone").
#
#   (a) RSPLIB's fractalpooluser -> our `rspserver -fractal` (at our registrar A);
#   (b) our fractalpooluser -> RSPLIB's `rspserver -fractal` (at B and at A): the image (colours
#       from the iteration counts only: -nocolormarks -nosessions) is byte-identical to the one
#       our client gets from our PE;
#   (c) failover mid-image in both directions with the PEs' failure tester
#       (-fgpfailureafter=N: after N DATA messages the PE sends its cookie and closes): the
#       client goes on at the other PE from the cookie (RSPLIB's client at RSPLIB's registrar B
#       with our PEs; ours at our registrar A with RSPLIB's PEs: the image stays identical).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/services-lib.sh"


# Small images: 12,000 points = 38 DATA messages of at most 324 points. (RSPLIB's client
# computes images of its window's size: 200x75 here, 47 DATA messages.)
WIDTH=160 HEIGHT=75

# rsplib_fpu NAME REGISTRAR(A|B) POOL: RSPLIB's fractalpooluser, headless, one session per
# image, the next image a second after the last.
rsplib_fpu() {
  local name=$1 reg=$2 pool=$3
  start "$name" "$CLIENT_HOST" env QT_QPA_PLATFORM=offscreen XDG_RUNTIME_DIR=/tmp/xdg \
    stdbuf -oL fractalpooluser -registrar="${REG[$reg]}:3863" -poolhandle="$pool" \
    -threads=1 -width=$WIDTH -height=$HEIGHT -interimagetime=1 -configdir=/nonexistent \
    -asapannounce=off "${RSPLIB_LOG[@]}"
}

# images_begun LOG...: the images our PEs began from a PARAMETER (not from a cookie).
images_begun() { strip_all "$@" | grep -c 'ImageStarted { size: ([0-9]*, [0-9]*), from: (0, 0) }'; }
# images_done LOG...: the images (or rests of images, after a cookie echo) our PEs finished.
images_done() { strip_all "$@" | grep -c 'ImageDone'; }
strip_all() { local f; for f; do strip "$f"; done; }
# rsplib_completed LOG...: the images RSPLIB's client completed: every image begun after the
# first was asked for after the end marker of the one before.
rsplib_completed() { local n; n=$(images_begun "$@"); echo $((n > 0 ? n - 1 : 0)); }
rsplib_completed_at_least() {
  local n=$1
  shift
  (($(rsplib_completed "$@") >= n))
}
no_invalid() { ! grep -q 'Invalid data block' "$1"; }

# our_fpu NAME REGISTRAR(A|B) POOL PNG: our fractalpooluser, one image, colours from the
# iteration counts only.
our_fpu() {
  local name=$1 reg=$2 pool=$3 png=$4
  start "$name" "$CLIENT_HOST" "$BIN/fractalpooluser" -registrar="${REG[$reg]}:3863" \
    -poolhandle="$pool" -threads=1 -width=$WIDTH -height=$HEIGHT -images=1 -nocolormarks \
    -nosessions -configdir=/nonexistent -output="$png" -transport=sctp -asapannounce=off \
    "${OUR_LOG[@]}"
}
# image_line FILE: our client's "Image 1: ..." summary line.
image_line() { strip "$1" | grep -o 'Image 1: .*'; }
failovers_of() { image_line "$1" | sed -n 's/.* \([0-9]*\) failover(s).*/\1/p'; }

setup
[ -x "$BIN/fractalpooluser" ] || {
  echo "$SCENARIO: $BIN/fractalpooluser missing (cargo build --release -p rserpool-mio)" >&2
  exit 2
}

start_registrars

log "--- fractal 1: RSPLIB's fractalpooluser, our PE \$31 at our registrar A"
our_pe fg1-h3 h3 31 A FG1 -fractal
wait_registered "(a) fractal: our PE \$31 registered at our registrar" A FG1 31
rsplib_fpu fg1-client A FG1
wait_for 40 rsplib_completed_at_least 3 "$OUT/fg1-h3.log"
stop fg1-client
check "(a) fractal: RSPLIB's client completed >= 3 images from our PE, without a failover ($(rsplib_completed "$OUT/fg1-h3.log") completed; our PE finished $(images_done "$OUT/fg1-h3.log"))" \
  eval "rsplib_completed_at_least 3 '$OUT/fg1-h3.log' && ! grep -q 'FAILOVER' '$OUT/fg1-client.log'"
check "(a) fractal: RSPLIB's client found no invalid DATA message" no_invalid "$OUT/fg1-client.log"
stop_all_pes fg1

log "--- fractal 2: our fractalpooluser, RSPLIB's PE \$33 at RSPLIB's registrar B; our PE \$32 at A for the reference image"
our_pe fg2-h3 h3 32 A FG2 -fractal
rsplib_pe fg2-h4 h4 33 B FG2R -fractal
wait_registered "(b) fractal: our PE \$32 registered at our registrar" A FG2 32
wait_registered "(b) fractal: RSPLIB's PE \$33 registered at RSPLIB's registrar" B FG2R 33
our_fpu fg2-ours A FG2 "$OUT/fg2-ours.png"
wait_exit fg2-ours 40
check "(b) fractal: reference image from our PE, exit 0 (rc $EXIT_RC; $(image_line "$OUT/fg2-ours.log"))" \
  eval "[ $EXIT_RC = 0 ] && [ -s '$OUT/fg2-ours.png' ]"
our_fpu fg2-client B FG2R "$OUT/fg2-rsplib.png"
wait_exit fg2-client 40
check "(b) fractal: our client got an image from RSPLIB's PE, exit 0 (rc $EXIT_RC; $(image_line "$OUT/fg2-client.log"))" \
  eval "[ $EXIT_RC = 0 ] && grep -q 'Got Parameter' '$OUT/fg2-h4.log'"
check "(b) fractal: it is byte-identical to our PE's image" \
  cmp -s "$OUT/fg2-ours.png" "$OUT/fg2-rsplib.png"
stop_all_pes fg2

log "--- fractal 3: RSPLIB's fractalpooluser, our PEs \$34/\$44 with -fgpfailureafter=12 at RSPLIB's registrar B"
our_pe fg3-h3 h3 34 B FG3 -fractal -fgpfailureafter=12 -fgpcookiemaxpackets=4
our_pe fg3-h4 h4 44 B FG3 -fractal -fgpfailureafter=12 -fgpcookiemaxpackets=4
wait_registered "(c) fractal: our PEs \$34, \$44 registered at RSPLIB's registrar" B FG3 34 44
rsplib_fpu fg3-client B FG3
wait_for 60 rsplib_completed_at_least 3 "$OUT/fg3-h3.log" "$OUT/fg3-h4.log"
stop fg3-client
fo=$(strip "$OUT/fg3-client.log" | grep -c 'RSERPOOL_FAILOVER_COMPLETE')
resumed=$(strip_all "$OUT/fg3-h3.log" "$OUT/fg3-h4.log" | grep -c 'cookie echo, resuming')
check "(c) fractal: our PEs fail every 12 DATA messages: RSPLIB's client completed $(rsplib_completed "$OUT/fg3-h3.log" "$OUT/fg3-h4.log") images, failing over $fo times, our PEs resumed $resumed times from its cookie echoes" \
  eval "rsplib_completed_at_least 3 '$OUT/fg3-h3.log' '$OUT/fg3-h4.log' && ((fo >= 6 && resumed >= 6))"
check "(c) fractal: both our PEs served" \
  eval "grep -q ImageStarted '$OUT/fg3-h3.log' && grep -q ImageStarted '$OUT/fg3-h4.log'"
check "(c) fractal: RSPLIB's client found no invalid DATA message" no_invalid "$OUT/fg3-client.log"
stop_all_pes fg3

log "--- fractal 4: our fractalpooluser, RSPLIB's PEs \$35/\$45 with -fgpfailureafter=12 at our registrar A"
rsplib_pe fg4-h3 h3 35 A FG4 -fractal -fgpfailureafter=12 -fgpcookiemaxpackets=4
rsplib_pe fg4-h4 h4 45 A FG4 -fractal -fgpfailureafter=12 -fgpcookiemaxpackets=4
wait_registered "(b) fractal: RSPLIB's PEs \$35, \$45 registered at our registrar" A FG4 35 45
our_fpu fg4-client A FG4 "$OUT/fg4-rsplib.png"
wait_exit fg4-client 60
fo=$(failovers_of "$OUT/fg4-client.log")
check "(b)(c) fractal: our client, RSPLIB's PEs failing every 12 DATA messages: image complete after ${fo:-?} failovers, exit 0 (rc $EXIT_RC; $(image_line "$OUT/fg4-client.log"))" \
  eval "[ $EXIT_RC = 0 ] && ((${fo:-0} >= 2))"
check "(c) fractal: RSPLIB's PEs resumed from our cookie echoes" \
  eval "grep -q 'Got CookieEcho' '$OUT/fg4-h3.log' '$OUT/fg4-h4.log'"
check "(c) fractal: the image across failovers is byte-identical to the reference" \
  cmp -s "$OUT/fg2-ours.png" "$OUT/fg4-rsplib.png"
stop_all_pes fg4

summary
