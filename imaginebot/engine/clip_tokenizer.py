"""CLIP's tokenizer, built with no download from the BPE merges that ship with the bot (``models/clip/``).

The hub's Stable Diffusion tokenizer folders hold CLIP's vocabulary as ``vocab.json`` and ``merges.txt``;
both are made from one file, OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (MIT), which we ship. The vocabulary
is built as CLIP builds it (openai/CLIP ``simple_tokenizer.py``): the 256 byte characters, the same with
``</w>``, one token per merge, then ``<|startoftext|>`` and ``<|endoftext|>``: 49408 tokens.
"""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path
from typing import Any

from transformers import CLIPTokenizer

BPE_FILE = Path(__file__).resolve().parents[1] / "models" / "clip" / "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408
_MERGES = VOCAB_SIZE - 2 * 256 - 2  # the file holds more merges than CLIP was trained with: the first 48894


def bytes_to_unicode() -> list[str]:
    """CLIP's (and GPT-2's) reversible byte -> printable character table, in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


@functools.cache
def clip_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary (token -> id) and its merges, in rank order."""
    lines = gzip.decompress(BPE_FILE.read_bytes()).decode("utf-8").split("\n")
    merges = [(left, right) for left, right in (line.split() for line in lines[1 : _MERGES + 1])]
    chars = bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + [left + right for left, right in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}, merges


def clip_tokenizer(folder: Path) -> CLIPTokenizer:
    """The tokenizer a hub tokenizer folder describes (its ``tokenizer_config.json``: the padding token and
    the length), over the shipped vocabulary. SD 1.x pads with ``<|endoftext|>``; SD 2.x and SDXL's second
    tokenizer pad with ``!`` (id 0), as OpenCLIP does."""
    config: dict[str, Any] = json.loads((folder / "tokenizer_config.json").read_text())
    pad = config.get("pad_token", "<|endoftext|>")
    vocab, merges = clip_vocab()
    # the fast tokenizer's BPE takes (left, right) pairs, though the stub says strings
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,  # type: ignore[arg-type]
        pad_token=pad["content"] if isinstance(pad, dict) else pad,
        model_max_length=int(config.get("model_max_length", 77)),
    )
