#!/usr/bin/env bash
# newer-uml.sh: makes a newer User-Mode Linux kernel available to shared/tools/sctp-vm, for
# hosts where Debian 12's UML 6.1 does not boot. On a host kernel 6.18 with an AMX CPU it
# panics at its first process with "ptrace set fp regs failed, errno = 14" (the host wants
# the whole, larger XSAVE area; UML 6.1 and 6.12 pass a smaller one); UML 7.2 from Debian
# sid boots there.
#
# What it does (idempotent; ~40 MB download the first time, then nothing):
#   1. downloads Debian sid's user-mode-linux and libc6 packages (the UML binary needs a
#      newer glibc than bookworm's) into $UML_CACHE (default /var/cache/rserpool-uml);
#   2. makes a linux.uml that runs with that glibc (patchelf: interpreter and rpath);
#   3. copies its modules to /usr/lib/uml/modules/<version>, where the VM's init loads them
#      from (the VM's root is the host's root);
#   4. prints the directory to put first in PATH: `PATH=$(newer-uml.sh):$PATH sctp-vm run ...`.
# Needs root, network access to deb.debian.org, curl, xz, dpkg-deb and patchelf (installed
# with apt-get when missing). Exit 1 with a message when something fails.
set -euo pipefail
cache=${UML_CACHE:-/var/cache/rserpool-uml}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
say() { echo "newer-uml: $*" >&2; }

if [ -x "$cache/bin/linux.uml" ] && [ -s "$cache/version" ] &&
  [ -e "/usr/lib/uml/modules/$(cat "$cache/version")/modules.dep" ]; then
  echo "$cache/bin"
  exit 0
fi
[ "$(id -u)" = 0 ] || { say "needs root (it installs modules under /usr/lib/uml)"; exit 1; }
need=()
for c in curl xz dpkg-deb patchelf; do command -v $c >/dev/null || need+=("$c"); done
if ((${#need[@]})); then
  pkgs=()
  for c in "${need[@]}"; do
    case $c in xz) pkgs+=(xz-utils) ;; dpkg-deb) pkgs+=(dpkg) ;; *) pkgs+=("$c") ;; esac
  done
  say "installing ${pkgs[*]}"
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >&2
fi
mkdir -p "$cache/debs"
packages=$cache/debs/sid-Packages
curl -fsS --max-time 120 "$mirror/dists/sid/main/binary-amd64/Packages.xz" | xz -dc >"$packages" ||
  { say "cannot fetch sid's package index from $mirror"; exit 1; }
fetch() { # fetch PACKAGE: downloads its .deb, prints the file
  local file
  file=$(awk -v p="$1" '$1 == "Package:" { hit = ($2 == p) } hit && $1 == "Filename:" { print $2; exit }' "$packages")
  [ -n "$file" ] || { say "no package $1 in sid"; exit 1; }
  local out=$cache/debs/${file##*/}
  [ -s "$out" ] || curl -fsS --max-time 600 -o "$out" "$mirror/$file" || { say "cannot download $file"; exit 1; }
  echo "$out"
}
uml=$(fetch user-mode-linux)
libc=$(fetch libc6)
rm -rf "$cache/root" "$cache/bin"
mkdir -p "$cache/root" "$cache/bin"
dpkg-deb -x "$uml" "$cache/root"
dpkg-deb -x "$libc" "$cache/root"
version=$(ls "$cache/root/usr/lib/uml/modules" | head -1)
[ -n "$version" ] && [ -e "$cache/root/usr/lib/uml/modules/$version/kernel/net/sctp/sctp.ko" ] ||
  { say "the UML package has no sctp module"; exit 1; }
libdir=$cache/root/usr/lib/x86_64-linux-gnu
cp "$cache/root/usr/bin/linux.uml" "$cache/bin/linux.uml"
patchelf --set-interpreter "$libdir/ld-linux-x86-64.so.2" --set-rpath "$libdir" "$cache/bin/linux.uml"
rm -rf "/usr/lib/uml/modules/$version"
cp -a "$cache/root/usr/lib/uml/modules/$version" /usr/lib/uml/modules/
echo "$version" >"$cache/version"
say "UML $version from $(basename "$uml") ready in $cache/bin"
echo "$cache/bin"
