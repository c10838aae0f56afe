#!/usr/bin/env bash
# Runtime images only (Dockerfile, after `STATETUNE_RUNTIME_ONLY=1 scripts/setup.sh`): purges the
# packages apt pulled in (those not listed in BEFORE, the packages installed before it ran) that no
# library of the given runtime packages loads, directly or through other libraries. Debian's libtorch1.13 depends on OpenCV, GDAL and Qt, whose packages pull in
# Mesa's GL drivers, LLVM, Perl and data packages (~300 MB) that statetune never loads. The base
# system stays as it was. dpkg then records unmet dependencies: fine for an image that
# installs nothing more, which is why this is not for machines that keep using apt.
# Usage: prune-runtime-packages.sh BEFORE PACKAGE...   (BEFORE: a file, one package name a line;
#        PACKAGE: the runtime packages, installed)
set -euo pipefail
export LC_ALL=C  # sort and comm must agree on the order
((EUID == 0)) || { echo "prune-runtime-packages: run as root" >&2; exit 1; }
before=$1; shift

# Every library the runtime packages' libraries load (ldd resolves the whole tree).
mapfile -t loaded < <(dpkg -L "$@" | grep -E '\.so(\.[0-9]+)*$' | xargs -r ldd 2>/dev/null |
  awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u | xargs -r readlink -f | sort -u)
# Their packages; with merged /usr a library may be recorded under /lib instead of /usr/lib.
owners() {
  local lib
  for lib in "$@"; do
    dpkg -S "$lib" 2>/dev/null || dpkg -S "${lib#/usr}" 2>/dev/null || true
  done | cut -d: -f1 | sort -u
}
mapfile -t keep < <({ owners "${loaded[@]}"; printf '%s\n' "$@"; } | sort -u)

mapfile -t prune < <(dpkg-query -W -f='${Package}\n' | sort -u | comm -23 - <(sort -u "$before") |
  comm -23 - <(printf '%s\n' "${keep[@]}"))
if ((${#prune[@]})); then
  echo "prune-runtime-packages: purging ${#prune[@]} packages nothing loads: ${prune[*]}"
  dpkg --purge --force-depends "${prune[@]}" >/dev/null
fi
