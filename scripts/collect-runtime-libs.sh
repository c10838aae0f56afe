#!/usr/bin/env bash
# Images only (Dockerfile build stages): copies every shared library the given binaries load into
# OUT, so that a runtime stage needs nothing from apt. Debian's libtorch1.13 *package* depends on
# OpenCV, GDAL, Qt, Perl, Mesa and their data (~400 MB an image never loads); the libraries the
# binaries load, the whole ldd tree, are what ships. Left out: the libraries of the packages listed
# in BASE_PACKAGES (the runtime base image's own packages: libc, libstdc++, zlib...) and those under
# SKIP_PREFIX (e.g. a LibTorch folder the image copies whole). OUT/PACKAGES lists the Debian package
# and version of every copied library, for the image's security scanning and for operators.
# Usage: collect-runtime-libs.sh OUT BINARY...
# env: BASE_PACKAGES (a file, one package name a line), SKIP_PREFIX (a folder), ALLOW_MISSING (a regex
#      of sonames that may be absent at build time, e.g. the GPU driver's libcuda.so.1)
set -euo pipefail
export LC_ALL=C
out=$1; shift
mkdir -p "$out"
declare -A in_base=() owner=()
if [[ -n "${BASE_PACKAGES:-}" ]]; then
  while read -r p; do in_base[$p]=1; done <"$BASE_PACKAGES"
fi
# "soname path" pairs; a "soname => not found" line is an error unless ALLOW_MISSING names it.
mapfile -t lines < <(ldd "$@" | awk '$2 == "=>" {print $1, $3}' | sort -u)
paths=()
for line in "${lines[@]}"; do
  soname=${line%% *} path=${line#* }
  if [[ "$path" == not ]]; then
    [[ -n "${ALLOW_MISSING:-}" && "$soname" =~ ${ALLOW_MISSING} ]] && continue
    echo "collect-runtime-libs: $soname is not found (ldd $*)" >&2
    exit 1
  fi
  # With merged /usr dpkg records a library under /usr/lib or under /lib: ask for both.
  paths+=("$path" "/usr${path#/usr}" "${path#/usr}")
done
# One dpkg -S for all ("pkg:arch: /path" lines); owners are keyed by file name (sonames are unique).
while IFS= read -r entry; do
  pkg=${entry%%:*} file=${entry##*/}
  owner[$file]=$pkg
done < <(dpkg -S "${paths[@]}" 2>/dev/null | grep -v ', ' || true)
packages=()
for line in "${lines[@]}"; do
  soname=${line%% *} path=${line#* }
  [[ "$path" == not ]] && continue
  [[ -n "${SKIP_PREFIX:-}" && "$path" == "$SKIP_PREFIX"* ]] && continue
  pkg=${owner[${path##*/}]:-}
  [[ -n "$pkg" && -n "${in_base[$pkg]:-}" ]] && continue
  [[ -n "$pkg" ]] && packages+=("$pkg")
  cp -L "$path" "$out/$soname"
done
printf '%s\n' "${packages[@]}" | sort -u | xargs -r dpkg-query -W -f='${Package} ${Version}\n' >"$out/PACKAGES"
echo "collect-runtime-libs: $(find "$out" -name '*.so*' | wc -l) libraries from $(wc -l <"$out/PACKAGES")" \
     "packages, $(du -sm "$out" | cut -f1) MB"
