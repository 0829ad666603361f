"""Images sent with prompts (workload.images, dataset.imageField): synthetic PNGs made per request,
and a dataset's own images, with the size facts the records keep. Pure, standard library only.

A synthetic image must be unique per request (a server that caches an image's encoding, as vLLM
does, must not get it free) and cheap to make on the load generator's hot path, and its encoded
size should be a photo's, not a noise image's (≈ 3 bytes a pixel) or a flat one's (≈ 0). So its
top eighth is random pixels and the rest repeats the last random row with PNG's "Up" filter: about
3 bits a pixel, like a JPEG photo. The repeated part is the same for every image of a size, so its
deflate blocks are made once; per request only the random rows are stored (uncompressed blocks)
and the checksums are computed: ~1 ms for a 1024×768 image where compressing it takes ~13 ms.
"""

from __future__ import annotations

import random
import struct
import zlib
from functools import lru_cache

from fmbench_k8s.contract.images import PNG_SIGNATURE, Image

RANDOM_SHARE = 8  # one row in this many is random (see the module's docstring)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


_ADLER_BASE = 65521


def adler32_combine(first: int, second: int, second_len: int) -> int:
    """adler32 of A+B from adler32(A), adler32(B) and len(B) (zlib's adler32_combine, which
    Python's zlib module does not expose)."""
    rem = second_len % _ADLER_BASE
    sum1 = first & 0xFFFF
    sum2 = (rem * sum1) % _ADLER_BASE
    sum1 = (sum1 + (second & 0xFFFF) + _ADLER_BASE - 1) % _ADLER_BASE
    sum2 = (sum2 + (first >> 16) + (second >> 16) + _ADLER_BASE - rem) % _ADLER_BASE
    return sum1 | (sum2 << 16)


@lru_cache(maxsize=64)
def _template(width: int, height: int) -> tuple[int, bytes, bytes, int, int]:
    """For one size: the random rows' count, the PNG up to its IDAT chunk, and the repeated rows'
    deflate blocks (final), adler32 and length."""
    rows = max(1, -(-height // RANDOM_SHARE))
    head = PNG_SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    repeated = (b"\x02" + bytes(3 * width)) * (height - rows)  # filter Up, no change: the row above again
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    blocks = tail.compress(repeated) + tail.flush(zlib.Z_FINISH)
    return rows, head, blocks, zlib.adler32(repeated), len(repeated)


def synthetic_png(width: int, height: int, rng: random.Random) -> Image:
    """A width×height RGB PNG whose random rows come from ``rng`` (module docstring)."""
    rows, head, tail, tail_adler, tail_len = _template(width, height)
    stride = 3 * width
    pixels = rng.randbytes(rows * stride)
    raw = b"".join(b"\x00" + pixels[i * stride : (i + 1) * stride] for i in range(rows))
    stored = zlib.compressobj(0, zlib.DEFLATED, -15)
    blocks = stored.compress(raw) + stored.flush(zlib.Z_FULL_FLUSH)  # byte-aligned, not final
    adler = adler32_combine(zlib.adler32(raw), tail_adler, tail_len)
    idat = b"\x78\x01" + blocks + tail + struct.pack(">I", adler)
    return Image(head + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""), "image/png", width, height)
