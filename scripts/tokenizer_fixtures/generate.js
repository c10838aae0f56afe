#!/usr/bin/env node
// Generates the reference fixtures for statetune's C++ byte-level BPE tokenizer
// (server/engine/text) with Hugging Face `tokenizers` (the Rust library through its Node bindings).
//
//   mkdir -p /tmp/tokfix && cd /tmp/tokfix && npm install tokenizers@0.23.2
//   NODE_PATH=/tmp/tokfix/node_modules node scripts/tokenizer_fixtures/generate.js \
//       ../shared tests/text/fixtures
//
// Writes
//   gpt_neox_encodings.jsonl  {"text", "ids", "decoded"}: encode(text) without extra special tokens,
//                             and decode(ids, skipSpecialTokens=false) (differs from text where NFC
//                             composes it).
//   gpt_neox_decodings.jsonl  {"ids", "decoded", "decoded_skip"}: decode of id sequences that need
//                             not be valid UTF-8 (random ids, single bytes, split emoji), with
//                             special tokens kept and skipped.
// Everything is deterministic (seeded PRNG, fixed files), so re-running gives the same output.
'use strict';
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require('tokenizers');

const sharedDir = process.argv[2] || path.join(__dirname, '../../../shared');
const outDir = process.argv[3] || path.join(__dirname, '../../tests/text/fixtures');

// mulberry32: small seeded PRNG so the corpus does not change between runs.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = rng(20261123);
const pick = (arr) => arr[Math.floor(rand() * arr.length)];

const texts = [];
const add = (s) => { if (typeof s === 'string' && s.length > 0) texts.push(s); };

// Hand-written cases: each exercises one rule of the pre-tokenizer, the added tokens or NFC.
[
  'Hello world', 'Hello, world!', 'hello   world', 'a\n\n  b', "I'm 12345",
  "I'm you're we've they'll he'd it's don't", "'s't're've'm'll'd", "O'Neil's car's", "IT'S I'LL",
  "rock 'n' roll", "''quoted''", 'The year 2026; 3.14159, -42, 1e-9, 0x1F, 1,000,000.',
  'Tabs\tand\ttabs', 'trailing spaces   ', '   leading spaces', ' ', '  ', '\n', '\t', '\r\n',
  'line1\nline2\r\nline3\n\n\nline4', 'a \n b', 'x\u00a0y', 'non\u2003breaking\u3000space',
  'end with newline\n', '\n\nstarts with newlines', 'mixed \t \n \t spaces',
  ' '.repeat(1), ' '.repeat(2) + 'x', ' '.repeat(23) + 'x', ' '.repeat(24) + 'x',
  ' '.repeat(25) + 'x', ' '.repeat(30) + 'x', ' '.repeat(50) + 'x', 'x' + ' '.repeat(49),
  'def f(x):\n    return x * 2\n\n\nclass A:\n        pass\n',
  '{"key": [1, 2, 3], "nested": {"a": null}}', '<html><body class="x">Hi &amp; bye</body></html>',
  'SELECT count(*) FROM head WHERE age  >  56', 'e-mail: someone@example.com, https://x.org/a?b=c',
  '!!!???...', '---===+++', '$100 + €50 = ¥?', '#hashtag @mention', '😀 😃 😄 😁 😆',
  'Emoji in text 👍🏽 and families 👨‍👩‍👧‍👦 and flags 🇩🇪🇯🇵', '🤖🤖🤖', 'a😀b',
  '中文分词测试，这是一个句子。', '日本語のテキスト、カタカナとひらがな。', '한국어 텍스트 입니다',
  'Ελληνικά κείμενα', 'Русский текст с цифрами 123', 'עברית ועוד', 'العربية ١٢٣٤',
  'हिन्दी पाठ', 'ไทยภาษา', 'Ünïcödé äccénts: café, naïve, résumé, façade, Ångström',
  // NFD input: the NFC normalizer must compose these before BPE.
  'cafe\u0301', 'e\u0301', 'A\u030a', 'n\u0303o', 'u\u0308ber', 'Cafe\u0301 na\u0308ive re\u0301sume\u0301',
  '\u1100\u1161\u11a8', '\u1112\u1161\u11ab\u1100\u1173\u11af', 'a\u0328\u0301', 'a\u0301\u0328',
  'o\u0302\u0323', 'o\u0323\u0302', '\u212b', '\u2126', 'q\u0307\u0323', '\u0041\u0300\u0300',
  'x\u0301', '\u0301start', 'ﬁ ligature', '①②③ ²³', 'ｆｕｌｌｗｉｄｔｈ', 'Ⅻ', '½ ¾',
  // Added and special tokens inside text.
  'Hello<|endoftext|>world', '<|endoftext|>', '<|padding|><|padding|>', 'a <|endoftext|> b',
  'text<|endoftext|><|endoftext|>more', '<|endoftext|>  <|padding|>', '<|endoftext', '|endoftext|>',
  '<|endoftext|>\n\nNext document', 'x' + ' '.repeat(10) + '<|endoftext|>' + ' '.repeat(3) + 'y',
  // Numbers and digits of other scripts.
  '0123456789', '9876543210 9876543210', '٠١٢٣', '१२३', 'Ⅳ Ⅷ', '3rd 21st 100th',
  // Odd characters.
  '\u200b zero width', 'soft\u00adhyphen', 'bidi \u202e text', '\u0000nul', 'bell\u0007',
  '\u000bvt\u000cff', 'nel\u0085x', 'ls\u2028ps\u2029x', 'ogham\u1680x', 'mongolian\u180ex',
  '\ud800\udc00 linear b', '\u{1d400}\u{1d401} math', '\u{10ffff}', '\ufffd replacement',
].forEach(add);

// Random strings over code points from many blocks and categories (letters, marks, numbers,
// punctuation, symbols, spaces), so every category table and the regex rules meet odd neighbours.
const ranges = [
  [0x20, 0x7e], [0x20, 0x7e], [0x20, 0x7e], [0x09, 0x0d], [0xa0, 0x24f], [0x300, 0x36f],
  [0x370, 0x3ff], [0x400, 0x4ff], [0x590, 0x6ff], [0x900, 0x97f], [0xe00, 0xe7f], [0x1100, 0x11ff],
  [0x1e00, 0x1fff], [0x2000, 0x206f], [0x2070, 0x218f], [0x2190, 0x27ff], [0x3000, 0x30ff],
  [0x4e00, 0x4fff], [0xac00, 0xad00], [0xff00, 0xffef], [0x1f300, 0x1f64f], [0x1d400, 0x1d7ff],
  [0x10000, 0x1007f], [0x1f1e6, 0x1f1ff],
];
for (let i = 0; i < 60; ++i) {
  const n = 1 + Math.floor(rand() * 24);
  let s = '';
  for (let j = 0; j < n; ++j) {
    const [lo, hi] = pick(ranges);
    const cp = lo + Math.floor(rand() * (hi - lo + 1));
    if (cp >= 0xd800 && cp <= 0xdfff) continue;
    s += String.fromCodePoint(cp);
  }
  add(s);
}
// Random ASCII soup with many spaces, apostrophes and digits (the regex's tricky spots).
const soup = ["'", "'s", "'ll", ' ', ' ', '  ', '   ', '\n', '\t', 'a', 'Ab', 'xyz', '12', '7',
  '.', ',', '!?', '-', '_', '(', ')', '"', 'é', '中', '😀', '<|endoftext|>'];
for (let i = 0; i < 40; ++i) {
  const n = 2 + Math.floor(rand() * 16);
  let s = '';
  for (let j = 0; j < n; ++j) s += pick(soup);
  add(s);
}

// Real lines from the shared datasets.
function sample(arr, k) {
  const out = [];
  for (let i = 0; i < k && arr.length > 0; ++i) out.push(arr[Math.floor(rand() * arr.length)]);
  return out;
}
const short = (s) => typeof s === 'string' && s.length > 0 && s.length <= 400;
const ds = (...p) => path.join(sharedDir, 'datasets', ...p);
try {
  const samsum = JSON.parse(fs.readFileSync(ds('samsum', 'train.json'), 'utf8'));
  sample(samsum.filter((d) => short(d.dialogue)).map((d) => d.dialogue), 40).forEach(add);
  sample(samsum.map((d) => d.summary).filter(short), 20).forEach(add);
  // Dialogues with non-ASCII characters (emoji, accents) are rarer; take some on purpose.
  sample(samsum.map((d) => d.dialogue).filter((s) => short(s) && /[^\x00-\x7f]/.test(s)), 25)
      .forEach(add);
  const spider = JSON.parse(fs.readFileSync(ds('spider', 'train.json'), 'utf8'));
  sample(spider, 25).forEach((d) => { add(d.question); add(d.query); });
  for (const task of ['SST-2', 'CoLA', 'RTE', 'MRPC']) {
    const lines = fs.readFileSync(ds('glue', task, 'train.tsv'), 'utf8').split('\n').slice(1)
        .filter(short);
    sample(lines, 12).forEach(add);  // whole TSV lines: tabs and labels included
  }
  for (const task of ['MNLI', 'QNLI', 'QQP']) {
    const rows = Object.values(JSON.parse(fs.readFileSync(ds('glue', task, 'train.json'), 'utf8')));
    sample(rows, 10).forEach((r) => add(r.text_a + '\n' + r.text_b));
  }
  const dart = JSON.parse(fs.readFileSync(ds('dart', 'dart-v1.1.1-full-dev.json'), 'utf8'));
  sample(dart, 20).forEach((d) => {
    add(d.tripleset.map((t) => t.join(' | ')).join('\n'));
    add(d.annotations[0].text);
  });
  const xml = fs.readFileSync(ds('dart', 'dart-v1.1.1-full-test.xml'), 'utf8').split('\n');
  sample(xml.filter(short), 15).forEach(add);
} catch (e) {
  console.error(`datasets not readable under ${sharedDir}: ${e.message}`);
  process.exit(1);
}

(async () => {
  const tok = Tokenizer.fromFile(path.join(sharedDir, 'models', 'gpt-neox-20b-tokenizer.json'));
  const seen = new Set();
  const enc = [];
  for (const text of texts) {
    if (seen.has(text)) continue;
    seen.add(text);
    const e = await tok.encode(text, null, { addSpecialTokens: false });
    const ids = e.getIds();
    const decoded = await tok.decode(ids, false);
    enc.push(JSON.stringify({ text, ids, decoded }));
  }
  fs.writeFileSync(path.join(outDir, 'gpt_neox_encodings.jsonl'), enc.join('\n') + '\n');

  // Decodings: sequences that cut multi-byte characters, random ids, special tokens.
  const vocabSize = tok.getVocabSize(true);
  const dec = [];
  const seqs = [];
  const emoji = (await tok.encode('😀👍🏽中文é', null, { addSpecialTokens: false })).getIds();
  for (let i = 0; i <= emoji.length; ++i) seqs.push(emoji.slice(0, i), emoji.slice(i));
  seqs.push(emoji.slice().reverse());
  // Token ids of the 256 single bytes (null where the vocabulary lacks one).
  const byteIds = [];
  const bytesToUnicode = () => {
    const bs = [];
    for (let b = 0x21; b <= 0x7e; ++b) bs.push(b);
    for (let b = 0xa1; b <= 0xac; ++b) bs.push(b);
    for (let b = 0xae; b <= 0xff; ++b) bs.push(b);
    const cs = bs.slice();
    let n = 0;
    for (let b = 0; b < 256; ++b) if (!bs.includes(b)) { bs.push(b); cs.push(256 + n); ++n; }
    const m = {};
    bs.forEach((b, i) => { m[b] = String.fromCodePoint(cs[i]); });
    return m;
  };
  const b2u = bytesToUnicode();
  for (let b = 0; b < 256; ++b) byteIds[b] = tok.tokenToId(b2u[b]);
  // Invalid UTF-8 byte patterns: stray continuation, truncated leads, overlong, surrogates, > U+10FFFF.
  const patterns = [[0x80], [0xbf, 0x41], [0xc3], [0xc3, 0x41], [0xe2, 0x82], [0xe2, 0x82, 0x41],
    [0xf0, 0x9f, 0x98], [0xf0, 0x9f, 0x98, 0x80], [0xc0, 0xaf], [0xe0, 0x80, 0xaf], [0xed, 0xa0, 0x80],
    [0xf4, 0x90, 0x80, 0x80], [0xf5, 0x80], [0xff], [0xfe, 0xfe], [0x41, 0xe2, 0x28, 0xa1, 0x42],
    [0xf0, 0x9f, 0x41, 0x98, 0x80], [0xe1, 0x80, 0xe2, 0xf0, 0x91, 0x92, 0xf1, 0xbf, 0x41]];
  // Bytes that never occur in UTF-8 (0xC0, 0xC1, 0xF5..0xFF) have no token in this vocabulary.
  for (const p of patterns) seqs.push(p.map((b) => byteIds[b]).filter((x) => x !== null));
  for (let i = 0; i < 60; ++i) {
    const n = 1 + Math.floor(rand() * 12);
    const s = [];
    for (let j = 0; j < n; ++j) {
      const r = rand();
      if (r < 0.5) s.push(byteIds[0x80 + Math.floor(rand() * 64)]);  // continuation bytes
      else if (r < 0.55) s.push(Math.floor(rand() * 2));
      else s.push(Math.floor(rand() * vocabSize));
    }
    seqs.push(s);
  }
  for (const ids of seqs) {
    if (ids.some((x) => typeof x !== "number")) throw new Error(`bad ids ${JSON.stringify(ids)}`);
    const decoded = await tok.decode(ids, false);
    const decodedSkip = await tok.decode(ids, true);
    dec.push(JSON.stringify({ ids, decoded, decoded_skip: decodedSkip }));
  }
  fs.writeFileSync(path.join(outDir, 'gpt_neox_decodings.jsonl'), dec.join('\n') + '\n');
  console.log(`${enc.length} encodings, ${dec.length} decodings, vocab ${vocabSize}`);
})();
