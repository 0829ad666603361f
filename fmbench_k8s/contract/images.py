"""Images on the wire (PNG and JPEG, raw or as data: URLs): their size, read from the header,
as the load generator records it and the simulator counts its tokens. Pure."""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageError(ValueError):
    """An image that cannot be sent: not PNG or JPEG, or unreadable."""


@dataclass(frozen=True, slots=True)
class Image:
    data: bytes  # the encoded file
    mime: str  # image/png or image/jpeg
    width: int
    height: int

    @property
    def format(self) -> str:
        """Bedrock converse's name for it: png or jpeg."""
        return self.mime.removeprefix("image/")

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode()}"


# A dataset's images have no size names: the report groups them by megapixels per image.
_PIXEL_CLASSES = ((250_000, "under-0.25mp"), (1_000_000, "0.25-1mp"), (4_000_000, "1-4mp"))


def pixel_class(pixels: int) -> str:
    """The megapixel class of an image of ``pixels`` pixels: under-0.25mp, 0.25-1mp, 1-4mp or over-4mp."""
    return next((name for bound, name in _PIXEL_CLASSES if pixels < bound), "over-4mp")


def image_facts(data: bytes, where: str) -> Image:
    """``data`` as an Image, its size read from the PNG or JPEG header; ``where`` names it in errors."""
    if data.startswith(PNG_SIGNATURE) and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return Image(data, "image/png", width, height)
    if data.startswith(b"\xff\xd8"):
        size = _jpeg_size(data)
        if size is not None:
            return Image(data, "image/jpeg", *size)
    raise ImageError(f"{where}: not a PNG or JPEG image (first bytes {data[:8]!r}); convert it to PNG or JPEG")


_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame segment."""
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _SOF:
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + length
    return None


def decode_data_url(url: str, where: str) -> bytes:
    """The bytes of a ``data:image/...;base64,`` URL."""
    head, sep, payload = url.partition(",")
    if not sep or not head.startswith("data:") or not head.endswith(";base64"):
        raise ImageError(f"{where}: a data URL must be data:image/png;base64,... or data:image/jpeg;base64,...")
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError:
        raise ImageError(f"{where}: the data URL's payload is not base64") from None
