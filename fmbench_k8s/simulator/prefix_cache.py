"""The simulator's prefix cache: vLLM's automatic prefix caching in miniature.

A prompt's words are cut into blocks of BLOCK; block i is identified by a hash chained over blocks
0..i, so a block is a hit only when the whole prompt up to it was seen before. The longest run of
cached blocks from the start is not prefilled again (the TTFT drops by their prefill time), and
every block of the prompt is then cached; the least recently used blocks go first when the cache
holds ``capacity`` blocks. Off unless the simulator is given ``--prefix-cache-blocks``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

BLOCK = 16  # vLLM's default block size, in tokens (here: words)


class PrefixCache:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"prefix cache capacity must be >= 1 block, got {capacity}")
        self.capacity = capacity
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def lookup(self, words: Sequence[str]) -> int:
        """The tokens of ``words`` already cached from the start (a multiple of BLOCK); caches
        every full block of ``words``."""
        chain = 0
        hits = 0
        hitting = True
        blocks = self._blocks
        for start in range(0, len(words) - BLOCK + 1, BLOCK):
            chain = hash((chain, *words[start : start + BLOCK]))
            if hitting and chain in blocks:
                hits += BLOCK
                blocks.move_to_end(chain)
                continue
            hitting = False
            blocks[chain] = None
            if len(blocks) > self.capacity:
                blocks.popitem(last=False)
        return hits
