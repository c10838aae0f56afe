#!/usr/bin/env python3
"""Builds the pretraining corpus of the small default Mamba base model (called by prepare_corpus.sh).

Standard library only: the sources are Debian packages of English text (installed by prepare_corpus.sh)
and the TRAINING splits of the task data sets in ../shared/datasets. Validation and test splits are never
read, because they score the adapters trained on top of this base model.

Every source yields documents (one dictionary entry, one fortune, one WordNet synset, one dialogue with its
summary, ...). Documents are cleaned to plain UTF-8 text without control characters, cut to at most
MAX_CHARS at paragraph/sentence boundaries, and short ones (e.g. one SST-2 phrase) are packed together so
that every document has at least MIN_CHARS. Held-out is decided by a hash of the document text, so it is
deterministic, about 1% of each source, and an identical text can never be on both sides.
"""

import argparse
import csv
import hashlib
import html.parser
import json
import os
import random
import re
import subprocess
import sys
import unicodedata
import zlib

MIN_CHARS = 50
MAX_CHARS = 2000
PACK_TARGET = 400  # short items are packed into documents of about this size
HELDOUT_PER_MILLE = 10  # ~1%
SHUFFLE_SEED = 20240601

DICTD = "/usr/share/dictd"


# ---------------------------------------------------------------------------------------------------------
# Cleaning and document shaping


def decode(raw):
    """UTF-8, falling back to cp1252 (GCIDE has a few stray Windows bytes such as 0x92 for an apostrophe)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


_OVERSTRIKE = re.compile(r"[^\n]\x08")  # fortunes underline/bold with "X\bX" (terminal overstriking)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ufeff\ufffd]")


def clean(text):
    """Plain NFC text: no control characters (newlines kept), no trailing spaces, at most one blank line."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    text = _OVERSTRIKE.sub("", text)
    text = _CONTROL.sub("", text)
    text = unicodedata.normalize("NFC", text)
    lines = [line.rstrip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def reflow(text):
    """Joins the hard-wrapped lines of each paragraph (dictionary files wrap at ~70 columns with indentation)."""
    paragraphs = re.split(r"\n\s*\n", text)
    return "\n".join(" ".join(p.split()) for p in paragraphs if p.strip())


def split_long(text, limit=MAX_CHARS):
    """Cuts a text into pieces of at most `limit` chars, at line breaks, else sentence ends, else spaces."""
    if len(text) <= limit:
        return [text]
    pieces, current = [], ""
    for unit in _units(text, limit):
        sep = "\n" if current and not current.endswith(" ") else ""
        if current and len(current) + len(sep) + len(unit) > limit:
            pieces.append(current.strip())
            current, sep = "", ""
        current += sep + unit
    if current.strip():
        pieces.append(current.strip())
    return pieces


def _units(text, limit):
    for line in text.split("\n"):
        if len(line) <= limit:
            yield line
            continue
        # One very long paragraph: cut after sentences, and a sentence longer than the limit at spaces.
        for sentence in re.split(r"(?<=[.!?;])\s+", line):
            while len(sentence) > limit:
                cut = sentence.rfind(" ", 0, limit)
                cut = cut if cut > limit // 2 else limit
                yield sentence[:cut] + " "
                sentence = sentence[cut:].lstrip()
            yield sentence + " "


def shape(items):
    """Cleans items, cuts long ones, packs short ones: every document ends up MIN_CHARS..MAX_CHARS."""
    buffer = []
    for item in items:
        text = clean(item)
        if not text:
            continue
        if len(text) >= MIN_CHARS:
            # A cut can leave a short tail such as "New in version 3.5.": too little context to keep.
            yield from (piece for piece in split_long(text) if len(piece) >= MIN_CHARS)
            continue
        buffer.append(text)
        if sum(len(t) + 1 for t in buffer) >= PACK_TARGET:
            yield "\n".join(buffer)
            buffer = []
    if buffer and sum(len(t) + 1 for t in buffer) > MIN_CHARS:
        yield "\n".join(buffer)


# ---------------------------------------------------------------------------------------------------------
# Debian sources


def dictd_entries(name):
    """The entries of /usr/share/dictd/<name>.dict.dz in file order, one per distinct (offset, length).

    The .index lines are `headword TAB offset TAB length` with offset/length in dictd's base64 digits;
    several headwords can point at one entry, so entries are de-duplicated by position. The
    `00-database-*` pseudo-entries are dictd metadata (licence text, URL), not dictionary content.
    """
    digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

    def b64(s):
        n = 0
        for c in s:
            n = n * 64 + digits.index(c)
        return n

    with open(f"{DICTD}/{name}.dict.dz", "rb") as f:
        data = zlib.decompress(f.read(), 16 + zlib.MAX_WBITS)  # dictzip files are plain gzip
    spans = set()
    with open(f"{DICTD}/{name}.index", "rb") as f:
        for line in f:
            fields = line.rstrip(b"\n").split(b"\t")
            if len(fields) < 3 or fields[0].startswith(b"00-database") or fields[0].startswith(b"00database"):
                continue
            spans.add((b64(fields[1].decode("ascii")), b64(fields[2].decode("ascii"))))
    for offset, length in sorted(spans):
        yield decode(data[offset : offset + length])


# GCIDE writes accented letters as [<mark><letter>] or [<letter><mark>] codes, e.g. ['e] = é, [=a] = ā.
_GCIDE_MARKS = {"'": "\u0301", "`": "\u0300", '"': "\u0308", "^": "\u0302", "~": "\u0303", "=": "\u0304",
                ",": "\u0327", ".": "\u0323", "-": "\u0306", "*": "\u030a"}
_GCIDE_NAMED = {"ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "eth": "ð", "thorn": "þ", "imac": "ī",
                "aum": "ä", "yogh": "ȝ", "deg": "°", "sect": "§", "root": "√", "dsdot": "ḍ",
                "=ae": "ǣ", "=AE": "Ǣ"}
_GCIDE_CODE = re.compile(r"\[(['`\"^~=,.\-*]?)([A-Za-z]{1,5})(\^?)\]")


def _gcide_letter(m):
    mark, letters, breve = m.groups()
    if (mark + letters) in _GCIDE_NAMED:
        return _GCIDE_NAMED[mark + letters]
    if len(letters) == 1 and (mark or breve):
        return letters + (_GCIDE_MARKS[mark] if mark else "") + ("\u0306" if breve else "")
    return m.group(0)  # a real bracketed word such as [Obs.] is kept (it has a '.', so it never matches)


def _drop_pronunciation(m):
    """A parenthesis holding accent codes and stress marks, e.g. `([.a]*b[a^]n"d[u^]n)`, is a phonetic
    spelling; other parentheses (etymology, examples) are kept."""
    inner = m.group(1)
    return "" if re.search(r"\[[^\]\s]{1,6}\]", inner) and re.search(r"[*\"`]", inner) else m.group(0)


def gcide_entry(text):
    # Drop the pronunciation (`\A*ban"don\` and its phonetic `([.a]*b[a^]n"d[u^]n)`), the provenance tags
    # (`[1913 Webster]`, `[WordNet 1.5]`, `[PJC]`) and the `{cross-reference}` braces.
    text = re.sub(r"\\[^\\\n]*\\", "", text)
    text = re.sub(r"\(([^()]{1,300})\)", _drop_pronunciation, text)
    text = re.sub(r"\[[^\]\n]*(Webster|WordNet|PJC|Century|Suppl)[^\]\n]*\]", "", text)
    text = unicodedata.normalize("NFC", _GCIDE_CODE.sub(_gcide_letter, text))  # e + U+0301 -> é, a letter
    text = re.sub(r"\[(asl|add)\]", "", text)  # schwa-like pronunciation codes with no plain letter
    # Run-on forms keep their syllable and stress marks (`Scorch"ing*ly`): drop marks between letters.
    text = re.sub(r"(?<=[^\W\d_])[*\"`]+(?=[^\W\d_])", "", text)
    text = text.replace("{", "").replace("}", "")
    text = re.sub(r" +,", ",", text)
    return reflow(text)


def dict_entry(text):
    """Jargon File, FOLDOC, Devil's Dictionary, V.E.R.A., elements: braces mark cross-references;
    FOLDOC ends entries with a `(YYYY-MM-DD)` edit date."""
    text = re.sub(r"^\s*\(\d{4}-\d{2}-\d{2}\)\s*$", "", text, flags=re.M)
    text = text.replace("{", "").replace("}", "")
    return reflow(text)


def wordnet_synsets():
    """One document per synset: `word, word (noun): gloss; "example"`. data.* lines after the licence header
    are `offset lex_file pos w_cnt(hex) word lex_id ... | gloss`."""
    pos_names = {"noun": "noun", "verb": "verb", "adj": "adjective", "adv": "adverb"}
    for pos, pos_name in pos_names.items():
        with open(f"/usr/share/wordnet/data.{pos}", "rb") as f:
            for raw in f:
                line = decode(raw)
                if line.startswith("  ") or " | " not in line:
                    continue  # licence header
                head, gloss = line.split(" | ", 1)
                fields = head.split()
                count = int(fields[3], 16)
                words = [re.sub(r"\([a-z]+\)$", "", w).replace("_", " ") for w in fields[4 : 4 + 2 * count : 2]]
                yield f"{', '.join(words)} ({pos_name}): {gloss.strip()}"


def fortunes(package, skip=("ascii-art",)):
    """Fortune files are texts separated by lines holding only `%`. Files are attributed to the package
    that installed them (fortunes-min ships a subset; duplicates are removed globally)."""
    listing = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True, check=True).stdout
    for path in sorted(listing.split("\n")):
        if not path.startswith("/usr/share/games/fortunes/") or os.path.islink(path) or not os.path.isfile(path):
            continue
        if path.endswith((".dat", ".u8")) or os.path.basename(path) in skip:
            continue
        with open(path, "rb") as f:
            text = decode(f.read())
        yield from re.split(r"^%\n", text, flags=re.M)


def kjv_passages():
    """The King James Bible as printed by bible-kjv's `bible` (one verse per line, `Ge1:1 text`);
    a document is one chapter (cut into passages of at most MAX_CHARS by shape())."""
    out = subprocess.run(["bible", "-f", "gen1:1-rev22:21"], capture_output=True, check=True).stdout
    chapter, verses = None, []
    for line in decode(out).split("\n"):
        m = re.match(r"^(\w+?)(\d+):(\d+) (.*)$", line)
        if not m:
            continue
        key = (m.group(1), m.group(2))
        if key != chapter and verses:
            yield "\n".join(verses)
            verses = []
        chapter = key
        verses.append(m.group(4))
    if verses:
        yield "\n".join(verses)


class _SphinxText(html.parser.HTMLParser):
    """Collects the prose of a Sphinx page (<p>, <dt>, <pre> in the main body), one section per document."""

    BLOCKS = {"p", "dt", "pre", "h1", "h2", "h3", "h4"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.sections, self.current, self.block = [], [], None
        self.main_depth = 0  # open <div>s inside the role="main" div; 0 = outside (sidebar, footer)
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "div" and (self.main_depth or attrs.get("role") == "main"):
            self.main_depth += 1
        if not self.main_depth:
            return
        if tag == "a" and "headerlink" in (attrs.get("class") or ""):
            self.skip += 1  # the pilcrow permalink
        if tag in ("h1", "h2", "h3") and self.current:
            self.sections.append("\n".join(self.current))
            self.current = []
        if tag in self.BLOCKS and self.block is None:
            self.block, self.text = tag, []

    def handle_endtag(self, tag):
        if tag == "a" and self.skip:
            self.skip -= 1
        if tag == self.block:
            text = "".join(self.text)
            text = text if tag == "pre" else " ".join(text.split())
            if text.strip():
                self.current.append(text.strip("\n"))
            self.block = None
        if tag == "div" and self.main_depth:
            self.main_depth -= 1

    def handle_data(self, data):
        if self.main_depth and self.block and not self.skip:
            self.text.append(data)

    def close(self):
        super().close()
        if self.current:
            self.sections.append("\n".join(self.current))


def python_docs(root="/usr/share/doc/python3.11/html"):
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("_"))  # _sources, _static, _images
        for name in sorted(files):
            if not name.endswith(".html") or name in ("genindex.html", "search.html", "py-modindex.html"):
                continue
            if name.startswith("genindex"):
                continue
            parser = _SphinxText()
            with open(os.path.join(directory, name), "rb") as f:
                parser.feed(decode(f.read()))
            parser.close()
            yield from parser.sections


# ---------------------------------------------------------------------------------------------------------
# Task data sets: training splits only


def glue_tsv(path, columns, header):
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if header:
            next(rows)
        for row in rows:
            if len(row) > max(columns):
                yield "\n".join(row[c] for c in columns)


def glue_json(path):
    with open(path, encoding="utf-8") as f:
        for example in json.load(f).values():
            yield f"{example['text_a']}\n{example['text_b']}"


def glue_train(datasets):
    glue = f"{datasets}/glue"
    yield from glue_tsv(f"{glue}/CoLA/train.tsv", [3], header=False)
    yield from glue_tsv(f"{glue}/SST-2/train.tsv", [0], header=True)
    yield from glue_tsv(f"{glue}/MRPC/train.tsv", [3, 4], header=True)
    yield from glue_tsv(f"{glue}/RTE/train.tsv", [1, 2], header=True)
    for task in ("MNLI", "QNLI", "QQP"):
        yield from glue_json(f"{glue}/{task}/train.json")


def samsum_train(datasets):
    with open(f"{datasets}/samsum/train.json", encoding="utf-8") as f:
        for example in json.load(f):
            yield f"{example['dialogue']}\n\nSummary: {example['summary']}"


def spider_train(datasets):
    with open(f"{datasets}/spider/train.json", encoding="utf-8") as f:
        for example in json.load(f):
            yield f"{example['question']}\n{example['query']}"


# ---------------------------------------------------------------------------------------------------------


def sources(datasets):
    """(name, Debian package or None, licence line, item generator). Licence lines summarise
    /usr/share/doc/<package>/copyright (checked at run time to contain the quoted phrase)."""
    return [
        ("gcide", "dict-gcide", "GPL-2+ (GNU Collaborative International Dictionary of English; Webster 1913 + WordNet)",
         "General Public License", (gcide_entry(e) for e in dictd_entries("gcide"))),
        ("wordnet", "wordnet-base", "WordNet 3.0 licence (BSD-like, Princeton University)",
         "WordNet", wordnet_synsets()),
        ("kjv-bible", "bible-kjv-text", "public domain text (King James Version); program: unrestricted use",
         "unrestricted use", kjv_passages()),
        ("python-docs", "python3.11-doc", "PSF License (Python documentation)",
         "Python Software Foundation", python_docs()),
        ("foldoc", "dict-foldoc", "GFDL-1.1+ (Free On-line Dictionary of Computing, Denis Howe)",
         "GNU Free Documentation", (dict_entry(e) for e in dictd_entries("foldoc"))),
        ("jargon", "dict-jargon", "public-domain (Jargon File 4.4.7)",
         "public-domain", (dict_entry(e) for e in dictd_entries("jargon"))),
        ("fortunes", "fortunes", "BSD (fortune-mod data files)", "BSD", fortunes("fortunes")),
        ("fortunes-min", "fortunes-min", "BSD (fortune-mod data files)", "BSD", fortunes("fortunes-min")),
        ("devil", "dict-devil", "public domain (Ambrose Bierce, The Devil's Dictionary)",
         "public domain", (dict_entry(e) for e in dictd_entries("devil"))),
        ("vera", "dict-vera", "GFDL-NIV-1.1+ (V.E.R.A. computing acronyms)",
         "GFDL", (dict_entry(e) for e in dictd_entries("vera"))),
        ("elements", "dict-elements", "public domain data / GPL-3 packaging",
         "public_domain", (dict_entry(e) for e in dictd_entries("elements"))),
        ("glue-train", None, "per task, see GLUE (CoLA, SST-2, MRPC, RTE full train; MNLI/QNLI/QQP 8,999-example train subsets)",
         None, glue_train(datasets)),
        ("samsum-train", None, "CC BY-NC-ND 4.0 (samsum/licence.txt)", None, samsum_train(datasets)),
        ("spider-train", None, "CC BY-SA 4.0", None, spider_train(datasets)),
    ]


def package_version(package):
    return subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                          capture_output=True, text=True, check=True).stdout.strip()


def check_licence(package, phrase):
    with open(f"/usr/share/doc/{package}/copyright", "rb") as f:
        if phrase.lower() not in decode(f.read()).lower():
            sys.exit(f"build_corpus: /usr/share/doc/{package}/copyright no longer mentions '{phrase}': "
                     "re-check the licence line in build_corpus.py")


def is_heldout(text):
    digest = hashlib.sha1(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 1000 < HELDOUT_PER_MILLE


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output directory (created)")
    ap.add_argument("--datasets", required=True, help="../shared/datasets")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    seen = set()  # sha1 of every kept document: exact duplicates (across sources too) are kept once
    train, stats = [], []
    with open(f"{args.out}/heldout.jsonl", "w", encoding="utf-8") as heldout:
        for name, package, licence, phrase, items in sources(args.datasets):
            if package:
                check_licence(package, phrase)
            counts = {"train_docs": 0, "train_chars": 0, "heldout_docs": 0, "heldout_chars": 0, "duplicates": 0}
            for doc in shape(items):
                key = hashlib.sha1(doc.encode("utf-8")).digest()
                if key in seen:
                    counts["duplicates"] += 1
                    continue
                seen.add(key)
                line = json.dumps({"text": doc}, ensure_ascii=False)
                if is_heldout(doc):
                    heldout.write(line + "\n")
                    counts["heldout_docs"] += 1
                    counts["heldout_chars"] += len(doc)
                else:
                    train.append(line)
                    counts["train_docs"] += 1
                    counts["train_chars"] += len(doc)
            stats.append((name, package, licence, counts))
            print(f"  {name:14s} train {counts['train_docs']:7d} docs {counts['train_chars']:11,d} chars   "
                  f"heldout {counts['heldout_docs']:5d} docs {counts['heldout_chars']:9,d} chars", flush=True)

    # Interleave the sources so that any prefix of train.jsonl is a sample of all of them.
    random.Random(SHUFFLE_SEED).shuffle(train)
    with open(f"{args.out}/train.jsonl", "w", encoding="utf-8") as f:
        f.write("\n".join(train) + "\n")

    write_sources_md(f"{args.out}/SOURCES.md", stats, args.datasets)
    total = lambda k: sum(c[k] for _, _, _, c in stats)
    print(f"  {'TOTAL':14s} train {total('train_docs'):7d} docs {total('train_chars'):11,d} chars   "
          f"heldout {total('heldout_docs'):5d} docs {total('heldout_chars'):9,d} chars")


def write_sources_md(path, stats, datasets):
    lines = [
        "# Sources of the pretraining corpus",
        "",
        "Made by `scripts/pretrain/prepare_corpus.sh`. One document per line of `train.jsonl` / `heldout.jsonl`",
        f"(`{{\"text\": ...}}`, {MIN_CHARS}-{MAX_CHARS} characters). Held-out: documents whose SHA-1 mod 1000 is below",
        f"{HELDOUT_PER_MILLE} (~1% of each source); train is shuffled with seed {SHUFFLE_SEED}. Exact duplicate documents are kept once.",
        f"Task data: training splits only, from `{os.path.realpath(datasets)}` (DART is left out: it has no",
        "official training split, and the project cuts its validation split out of the DART dev file).",
        "",
        "| source | Debian package | version | licence | train docs | train chars | heldout docs | heldout chars |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for name, package, licence, c in stats:
        version = package_version(package) if package else "-"
        lines.append(f"| {name} | {package or '(../shared/datasets)'} | {version} | {licence} | {c['train_docs']:,} | "
                     f"{c['train_chars']:,} | {c['heldout_docs']:,} | {c['heldout_chars']:,} |")
    total = lambda k: sum(c[k] for _, _, _, c in stats)
    lines.append(f"| **total** | | | | {total('train_docs'):,} | {total('train_chars'):,} | "
                 f"{total('heldout_docs'):,} | {total('heldout_chars'):,} |")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
