"""A CLIP-format BPE vocabulary (vocab.json + merges.txt) in which every caption word is one token.

CLIPTokenizer (slow or fast) splits a word into byte-level characters, the last one suffixed "</w>",
then applies merges lowest rank first. The merges here are learned like any BPE (most frequent pair
first, applied everywhere) until each caption word is whole, which guarantees that applying them in
rank order rebuilds exactly those words. The full byte alphabet is in the vocabulary, as in CLIP, so
unknown words still tokenize (into characters) instead of failing.
"""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

from imaginebot.tinymodel.shapes import BACKGROUND, COLOURS, POSITIONS, SHAPES, SIZES

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
WORD_END = "</w>"


def caption_words() -> list[str]:
    """Every word a caption can contain, sorted."""
    words = {"a", "on", "in", "the", "shape", BACKGROUND, *SHAPES, *COLOURS, *SIZES}
    for position in POSITIONS:
        words.update(position.split())
    return sorted(words)


def byte_alphabet() -> list[str]:
    """CLIP's (GPT-2's) reversible byte → printable character table, in byte order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars: list[str] = []
    extra = 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def build_clip_vocab(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) in CLIP's layout: alphabet, alphabet + "</w>", merged tokens, then BOS and EOS."""
    alphabet = byte_alphabet()
    tokens = alphabet + [c + WORD_END for c in alphabet]
    pieces = {w: [*w[:-1], w[-1] + WORD_END] for w in words}
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter()
        for seq in pieces.values():
            pairs.update(pairwise(seq))
        if not pairs:
            break
        # Most frequent first, ties broken by the pair itself: the result depends on nothing else.
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        tokens.append(best[0] + best[1])
        for word, seq in pieces.items():
            merged: list[str] = []
            i = 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    merged.append(seq[i] + seq[i + 1])
                    i += 2
                else:
                    merged.append(seq[i])
                    i += 1
            pieces[word] = merged
    tokens += [BOS, EOS]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    return vocab, merges
