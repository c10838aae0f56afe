#!/usr/bin/env bash
# The per-level CPU kernels (kernels/cpu_common.h) must not compile SHARED code for their level: an
# inline function or template from a header (ATen, the standard library) is emitted as a weak symbol
# in every object that uses it, and the linker keeps one copy at random. If the v4 object's copy used
# AVX-512, a v2 machine running any code that calls it would die with SIGILL.
# Usage: cpu_level_isolation_test.sh LEVEL OBJECT...   (LEVEL: v3 or v4)
# Fails when a global or weak function outside statetune::kernels::cpu::<LEVEL> uses an instruction
# that x86-64-v3 introduced: VEX / EVEX encoded ones (mnemonics v*, k*) and BMI1/2, LZCNT, MOVBE.
set -euo pipefail
level=$1; shift
own="N9statetune7kernels3cpu${#level}${level}"  # the level namespace, as it appears in mangled names
bad=0 checked=0
V3_MNEMONICS='^(v|k)|^(andn|bextr|blsi|blsmsk|blsr|bzhi|lzcnt|tzcnt|mulx|pdep|pext|rorx|sarx|shlx|shrx|movbe)$'
for obj in "$@"; do
  # Functions that other objects can see: global (T) or weak (W).
  shared=$(nm --defined-only "$obj" | awk '$2 == "T" || $2 == "W" {print $3}' | grep -v -- "$own" || true)
  [[ -z "$shared" ]] && continue
  hits=$(objdump -d --no-show-raw-insn "$obj" | awk -v re="$V3_MNEMONICS" '
      /^[0-9a-f]+ <.*>:$/ { name = substr($2, 2, length($2) - 3); next }
      name != "" && split($0, f, "\t") >= 2 { split(f[2], m, " "); if (m[1] ~ re) print name }' |
      sort -u | grep -Fx -f <(printf '%s\n' $shared) || true)
  checked=$((checked + $(wc -w <<<"$shared")))
  if [[ -n "$hits" ]]; then
    echo "FAIL: $obj: shared functions compiled with $level instructions:"
    c++filt <<<"$hits" | sed 's/^/  /'
    bad=1
  fi
done
# Guard against a vacuous pass: the level's own code must use them.
own_uses=$(for obj in "$@"; do objdump -d --no-show-raw-insn "$obj"; done | grep -c $'\tv' || true)
if ((own_uses == 0)); then echo "FAIL: no AVX instruction in the $level objects: not built for $level?"; exit 1; fi
echo "checked $checked shared functions in $# objects; $own_uses AVX instructions in the $level code"
exit $bad
