#!/usr/bin/env python3
"""NFC test cases for server/engine/text/unicode.cpp, from Python's unicodedata.

    python3 scripts/tokenizer_fixtures/gen_nfc_cases.py > tests/text/fixtures/nfc_cases.jsonl

Each line is {"text", "nfc"}: random strings dense in what NFC changes (combining marks of mixed
classes, decomposable letters, singletons, composition exclusions, Hangul jamo and syllables), plus
every code point that has a canonical decomposition, alone and followed by a combining mark.
"""
import json
import random
import sys
import unicodedata as ud

rng = random.Random(20261123)
decomposable = [cp for cp in range(0x110000)
                if ud.decomposition(chr(cp)) and not ud.decomposition(chr(cp)).startswith('<')]
marks = [cp for cp in range(0x300, 0x20000) if ud.combining(chr(cp))]
pools = [
    list(range(0x41, 0x5B)) + list(range(0x61, 0x7B)),  # ASCII letters (bases)
    decomposable,
    marks,
    marks,
    list(range(0x1100, 0x1113)) + list(range(0x1161, 0x1176)) + list(range(0x11A8, 0x11C3)),
    list(range(0xAC00, 0xAC40)),
    [0x212B, 0x2126, 0x0340, 0x0344, 0x0958, 0x2ADC, 0x1F71, 0x0F73, 0x0F75, 0x0F81],
    [0x20, 0x2E, 0x4E00, 0x1F600],
]
lines = []
for _ in range(300):
    n = rng.randint(1, 12)
    s = ''.join(chr(rng.choice(rng.choice(pools))) for _ in range(n))
    lines.append({'text': s, 'nfc': ud.normalize('NFC', s)})
# Long mixes of safe and unsafe text (the segmented fast path of unicode::nfc), pieces glued together
# without separators so marks meet precomposed letters and ASCII.
texts = [line['text'] for line in lines]
for _ in range(30):
    s = ''.join(rng.choice(texts) + rng.choice(['', 'abc', ' ', 'caf\u00e9', '\u4e2d', '\u00e0'])
                for _ in range(20))
    lines.append({'text': s, 'nfc': ud.normalize('NFC', s)})
# Every decomposable code point, in chunks, alone and with a mark after it.
chunk = []
for i, cp in enumerate(decomposable):
    chunk.append(chr(cp) + (chr(marks[i % len(marks)]) if i % 2 else ''))
    if len(chunk) == 24:
        s = ' '.join(chunk)
        lines.append({'text': s, 'nfc': ud.normalize('NFC', s)})
        chunk = []
if chunk:
    s = ' '.join(chunk)
    lines.append({'text': s, 'nfc': ud.normalize('NFC', s)})
for line in lines:
    sys.stdout.write(json.dumps(line, ensure_ascii=False) + '\n')
