#!/usr/bin/python3
"""An independent reference tokenizer for the tests: the classic BPE loop (find the best-ranked pair, merge every
occurrence, repeat) as GPT-2's and transformers' slow tokenizers write it, with Python's `regex` module for
pre-tokenization (Debian's python3 has no `regex` module, so \p{L}, \p{N} and \s are spelled out as character classes
from unicodedata; \s is Unicode White_Space, as in Rust's regex engines). Two modes:

  reference_tokenizer.py bytelevel CONFIG_DIR IN.json   (vocab.json + merges.txt + tokenizer_config.json, Qwen2-style)
  reference_tokenizer.py spm TOKENIZER_JSON IN.json     (SentencePiece-style BPE with byte fallback, no pre-tokenizer)

IN.json is a list of strings; prints a JSON list of id lists (no BOS/EOS).
"""
import json
import sys
import unicodedata

import re

QWEN2 = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def char_class(prefix):
    """The code points whose general category starts with prefix, as ranges for a [...] class."""
    ranges, start, prev = [], None, None
    for cp in range(0x110000):
        if unicodedata.category(chr(cp)).startswith(prefix):
            if start is None:
                start = cp
            prev = cp
        elif start is not None:
            ranges.append((start, prev))
            start = None
    if start is not None:
        ranges.append((start, prev))
    return "".join(re.escape(chr(a)) if a == b else re.escape(chr(a)) + "-" + re.escape(chr(b)) for a, b in ranges)


def compile_pattern(pattern):
    letters, numbers = char_class("L"), char_class("N")
    # Inside a class (the patterns only write them there as "\p{L}\p{N}]"), then standalone.
    pattern = pattern.replace(r"\p{L}\p{N}]", letters + numbers + "]")
    pattern = pattern.replace(r"\p{L}", "[" + letters + "]").replace(r"\p{N}", "[" + numbers + "]")
    pattern = pattern.replace(r"[^\s", "[^" + WHITE_SPACE).replace(r"\S", "[^" + WHITE_SPACE + "]")
    pattern = pattern.replace(r"\s", "[" + WHITE_SPACE + "]")
    return re.compile(pattern)


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def bpe(symbols, ranks):
    symbols = list(symbols)
    while len(symbols) > 1:
        pairs = {(symbols[i], symbols[i + 1]) for i in range(len(symbols) - 1)}
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(symbols):
            if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def split_added(text, added):
    """Leftmost-longest split on added tokens: a list of (str, id or None)."""
    if not added:
        return [(text, None)]
    pattern = re.compile("|".join(re.escape(a) for a in sorted(added, key=len, reverse=True)))
    out, last = [], 0
    for m in pattern.finditer(text):
        if m.start() > last:
            out.append((text[last:m.start()], None))
        out.append((m.group(), added[m.group()]))
        last = m.end()
    if last < len(text):
        out.append((text[last:], None))
    return out


def bytelevel(config_dir, texts):
    vocab = json.load(open(f"{config_dir}/vocab.json", encoding="utf-8"))
    merges = [tuple(l.split(" ")) for l in open(f"{config_dir}/merges.txt", encoding="utf-8").read().split("\n")
              if l and not l.startswith("#version")]
    ranks = {m: i for i, m in enumerate(merges)}
    config = json.load(open(f"{config_dir}/tokenizer_config.json", encoding="utf-8"))
    added = {v["content"]: int(k) for k, v in config.get("added_tokens_decoder", {}).items()}
    b2u = bytes_to_unicode()
    pat = compile_pattern(QWEN2)
    result = []
    for text in texts:
        ids = []
        for chunk, tid in split_added(text, added):
            if tid is not None:
                ids.append(tid)
                continue
            for word in pat.findall(unicodedata.normalize("NFC", chunk)):
                ids += [vocab[s] for s in bpe("".join(b2u[b] for b in word.encode("utf-8")), ranks)]
        result.append(ids)
    return result


def spm(tokenizer_json, texts):
    tok = json.load(open(tokenizer_json, encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in tok["model"]["merges"]]
    ranks = {m: i for i, m in enumerate(merges)}
    added = {a["content"]: a["id"] for a in tok["added_tokens"] if not a["normalized"]}
    result = []
    for text in texts:
        ids = []
        for chunk, tid in split_added(text, added):
            if tid is not None:
                ids.append(tid)
                continue
            normalized = "\u2581" + chunk.replace(" ", "\u2581")
            symbols = []
            for ch in normalized:
                if ch in vocab:
                    symbols.append(ch)
                else:
                    symbols += ["<0x%02X>" % b for b in ch.encode("utf-8")]
            ids += [vocab[s] for s in bpe(symbols, ranks)]
        result.append(ids)
    return result


if __name__ == "__main__":
    mode, path, inputs = sys.argv[1], sys.argv[2], sys.argv[3]
    texts = json.load(open(inputs, encoding="utf-8"))
    out = bytelevel(path, texts) if mode == "bytelevel" else spm(path, texts)
    sys.stdout.write(json.dumps(out))
