#!/bin/bash
# The VM's price list (benches/vm-costs.c): a system call, a page fault on the first write to
# a fresh page, and MADV_POPULATE_WRITE per page; on the host, then in the sctp-vm pinned to
# host CPU 1 like benches/vm-registrar. Benchmark, not a test: it asserts nothing.
#
#   benches/vm-costs.sh            (results also in benches/out/vm-costs.txt)
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
VM=${SCTP_VM:-$(cd "$here/.." && pwd)/shared/tools/sctp-vm/sctp-vm}
mkdir -p "$here/benches/out"
bin=$here/benches/out/vm-costs
cc -O2 -o "$bin" "$here/benches/vm-costs.c"
cd "$here"
{
    echo "# host"
    "$bin"
    echo "# sctp-vm (twice)"
    taskset -c "${VM_CPU:-1}" "$VM" run --net=lo --timeout=120 -- sh -c "$bin; $bin"
} | tee benches/out/vm-costs.txt
