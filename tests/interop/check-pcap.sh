#!/usr/bin/env bash
# check-pcap.sh CAPTURE [RSPWIRE]: the decoding checks of an interop capture (host or VM).
#   1. tshark decodes ASAP/ENRP messages in it, and marks nothing Malformed and raises no
#      expert error: `tshark -r X -Y "_ws.malformed || _ws.expert.severity >= error"` gives
#      no rows;
#   2. our `rspwire pcap` decodes every ASAP/ENRP/CSP message in it (exit 0).
# Prints the ASAP/ENRP message counts; exit 0 when both hold, 1 otherwise, 2 on usage errors.
set -u
pcap=${1:-}
here=$(cd "$(dirname "$0")" && pwd)
rspwire=${2:-${RSERPOOL_BIN:-${CARGO_TARGET_DIR:-$here/../../target}/release}/rspwire}
if [ -z "$pcap" ] || [ ! -s "$pcap" ]; then
  echo "usage: $0 CAPTURE.pcap [RSPWIRE]  (capture missing or empty: '$pcap')" >&2
  exit 2
fi
command -v tshark >/dev/null || {
  echo "check-pcap: tshark missing (apt-get install tshark)" >&2
  exit 2
}
[ -x "$rspwire" ] || {
  echo "check-pcap: $rspwire missing (cargo build --release -p rserpool-mio)" >&2
  exit 2
}
ok=0
tshark_q() { tshark -r "$pcap" "$@" 2>/dev/null; }

counts=$(tshark_q -Y "asap || enrp" -T fields -e _ws.col.Info |
  grep -o 'ENRP [A-Z][A-Za-z -]*\|ASAP [A-Z][A-Za-z -]*' | sed 's/ *$//' | sort | uniq -c)
total=$(awk '{ n += $1 } END { print n + 0 }' <<<"$counts")
echo "check-pcap: $pcap: $total ASAP/ENRP messages decoded by tshark:"
sed 's/^/    /' <<<"$counts"
if [ "$total" -eq 0 ]; then
  echo "check-pcap: FAIL: tshark found no ASAP/ENRP message"
  ok=1
fi
bad=$(tshark_q -Y "_ws.malformed || _ws.expert.severity >= error")
if [ -n "$bad" ]; then
  echo "check-pcap: FAIL: tshark marks $(wc -l <<<"$bad") frame(s) malformed or erroneous:"
  head -n 20 <<<"$bad" | sed 's/^/    /'
  ok=1
else
  echo "check-pcap: tshark: nothing malformed, no expert error"
fi
if out=$("$rspwire" pcap "$pcap" 2>&1); then
  echo "check-pcap: $(tail -n 1 <<<"$out")"
else
  echo "check-pcap: FAIL: rspwire pcap: $(tail -n 1 <<<"$out")"
  grep -i 'malformed\|reject\|error' <<<"$out" | head -n 20 | sed 's/^/    /'
  ok=1
fi
exit $ok
