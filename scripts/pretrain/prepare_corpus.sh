#!/usr/bin/env bash
# Builds the pretraining corpus of the small default Mamba base model:
#   scripts/pretrain/prepare_corpus.sh [OUTPUT_DIR]        (default /tmp/statetune-corpus)
# OUTPUT_DIR gets train.jsonl, heldout.jsonl ({"text": ...} per line) and SOURCES.md (packages, versions,
# licences, sizes). Sources: English text from Debian packages (installed here with apt-get) and the
# TRAINING splits of ../shared/datasets (override with STATETUNE_DATASETS). Not run in CI: it only
# reproduces the corpus of the default model. Deterministic and idempotent: a rerun rebuilds the same files.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:-/tmp/statetune-corpus}"
datasets="${STATETUNE_DATASETS:-$repo/../shared/datasets}"

packages=(dict-gcide wordnet-base bible-kjv bible-kjv-text python3.11-doc dict-foldoc dict-jargon
          fortunes fortunes-min dict-devil dict-vera dict-elements)

for f in glue/CoLA/train.tsv glue/SST-2/train.tsv glue/MRPC/train.tsv glue/RTE/train.tsv \
         glue/MNLI/train.json glue/QNLI/train.json glue/QQP/train.json samsum/train.json spider/train.json; do
  [[ -f "$datasets/$f" ]] || { echo "prepare_corpus: missing $datasets/$f (set STATETUNE_DATASETS)" >&2; exit 1; }
done
command -v python3 >/dev/null || { echo "prepare_corpus: needs python3 (standard library only)" >&2; exit 1; }

# Install only what is missing, so a rerun does not touch apt at all.
missing=()
for p in "${packages[@]}"; do
  [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""; [[ "$(id -u)" == 0 ]] || sudo="sudo"
  echo "prepare_corpus: installing ${missing[*]}"
  # dict-* packages pull in the dictd server; its start is refused in containers, which is harmless here.
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
fi

# Build next to the destination and swap it in at the end, so an interrupted run never leaves a
# half-written corpus where the trainer looks for it.
start=$SECONDS
tmp="$out.partial.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
echo "prepare_corpus: building $out"
python3 "$here/build_corpus.py" --out "$tmp" --datasets "$datasets"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "prepare_corpus: $(du -sh "$out/train.jsonl" | cut -f1) train.jsonl, $(du -sh "$out/heldout.jsonl" | cut -f1)" \
     "heldout.jsonl in $out ($((SECONDS - start)) s); sources and licences in $out/SOURCES.md"
