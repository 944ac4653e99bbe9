"""A CLIP-style BPE tokenizer made offline from a word list.

Every listed word becomes one token when BPE allows; any other word falls back to its
characters (the unknown-word path), so every lower-case ASCII text tokenizes.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CHARACTERS = string.ascii_lowercase + string.digits + string.punctuation
DEFAULT_WORDS = (
    "a an the of with and in on to photo picture image face person man woman cat dog horse zebra "
    "ball box tree house star sun sky ground grass sand snow water red green blue yellow orange "
    "purple pink white black brown gray make turn into add remove change get rid big small"
).split()


def build_clip_tokenizer(words: Iterable[str] = DEFAULT_WORDS, model_max_length: int = 77) -> CLIPTokenizer:
    """Build a CLIPTokenizer whose merges spell out each word of ``words``."""
    vocab: dict[str, int] = {BOS: 0, EOS: 1}
    merges: list[tuple[str, str]] = []

    def add(token: str) -> None:
        vocab.setdefault(token, len(vocab))

    for char in CHARACTERS:
        add(char)
        add(char + "</w>")
    seen: set[tuple[str, str]] = set()
    for word in sorted({w.lower() for w in words if w.isascii() and w.isalnum()}):
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            pair = (left, right)
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
            left = left + right
            add(left)
    # transformers 5 pitfall: file-path arguments silently give a broken tokenizer; pass objects.
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        model_max_length=model_max_length,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
    )
