"""The simulator's word tokenizer and the fixed text of generated tokens.

One token per whitespace-separated word: the load generator builds synthetic
prompts from plain words, so the prompt length it asks for is exactly what the
simulator charges prefill time for.
"""

from __future__ import annotations

# A leading space keeps concatenated output countable by the same rule.
TOKEN_TEXT = " tok"
# Arbitrary but stable, so TGI clients that look at token ids see a constant.
TOKEN_ID = 10_590


def count_tokens(text: str) -> int:
    """Number of whitespace-separated words in ``text``."""
    return len(text.split())


def generated_text(n_tokens: int) -> str:
    """Full text of ``n_tokens`` generated tokens."""
    return TOKEN_TEXT * n_tokens
