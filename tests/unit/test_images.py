"""Images with the prompts: the synthetic PNGs, a dataset's images, how each API carries them,
what the simulator counts, and the spec's rules (loadgen/images.py, fmbench_k8s/contract/images.py)."""

from __future__ import annotations

import base64
import io
import json
import random
import struct
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image as PilImage

from fmbench_k8s.api.spec import IMAGE_APIS, TEXT_ONLY_ENGINES, Workload
from fmbench_k8s.contract.engines import ENGINES
from fmbench_k8s.contract.images import ImageError, decode_data_url, image_facts, pixel_class
from fmbench_k8s.loadgen.clients import converse_messages
from fmbench_k8s.loadgen.datasets import DatasetError
from fmbench_k8s.loadgen.images import adler32_combine, synthetic_png
from fmbench_k8s.loadgen.prompts import PromptSource, load_corpus
from fmbench_k8s.simulator import protocol
from fmbench_k8s.simulator.params import SimParams


def _idat(png: bytes) -> bytes:
    """The IDAT chunk's data, its CRC checked."""
    at = 8
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind, body = png[at + 4 : at + 8], png[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", png[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + body), f"{kind!r} chunk CRC"
        if kind == b"IDAT":
            return body
        at += 12 + length
    raise AssertionError("no IDAT chunk")


@pytest.mark.parametrize(("width", "height"), [(16, 16), (17, 9), (448, 448), (1344, 1008)])
def test_a_synthetic_png_is_valid_of_its_size_and_a_photos_bytes(width: int, height: int) -> None:
    image = synthetic_png(width, height, random.Random(7))
    raw = zlib.decompress(_idat(image.data))  # checks the adler32 of the whole image
    assert len(raw) == height * (1 + 3 * width)
    decoded = PilImage.open(io.BytesIO(image.data))
    decoded.load()
    assert decoded.size == (width, height) and decoded.mode == "RGB"
    assert (image.width, image.height, image.mime) == (width, height, "image/png")
    if width * height >= 100_000:  # ~3 bits a pixel, as a JPEG photo: not noise (24), not flat (~0)
        assert 2.5 < len(image.data) * 8 / (width * height) < 3.5
    # the lower rows repeat the last random one (filter Up, no change)
    rows = decoded.tobytes()
    stride = 3 * width
    assert rows[-stride:] == rows[-2 * stride : -stride]


def test_synthetic_pngs_differ_per_request_and_repeat_per_seed() -> None:
    rng = random.Random(1)
    made = [synthetic_png(64, 64, rng).data for _ in range(50)]
    assert len(set(made)) == 50, "a server's image cache must not serve one request's image to another"
    assert synthetic_png(64, 64, random.Random(1)).data == made[0]


def test_adler32_combine_is_zlibs() -> None:
    rng = random.Random(3)
    for _ in range(20):
        a, b = rng.randbytes(rng.randrange(0, 70_000)), rng.randbytes(rng.randrange(0, 70_000))
        assert adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b)) == zlib.adler32(a + b)


def test_png_and_jpeg_sizes_are_read_from_their_headers_and_others_refused() -> None:
    out = io.BytesIO()
    PilImage.new("RGB", (321, 123), (10, 200, 30)).save(out, "JPEG", quality=80)
    jpeg = image_facts(out.getvalue(), "x")
    assert (jpeg.mime, jpeg.width, jpeg.height, jpeg.format) == ("image/jpeg", 321, 123, "jpeg")
    png = synthetic_png(99, 45, random.Random(0))
    assert decode_data_url(png.data_url(), "x") == png.data
    out = io.BytesIO()
    PilImage.new("RGB", (8, 8)).save(out, "GIF")
    with pytest.raises(ImageError, match=r"row 3: not a PNG or JPEG image .* convert it to PNG or JPEG"):
        image_facts(out.getvalue(), "row 3")
    with pytest.raises(ImageError, match="data:image/png;base64"):
        decode_data_url("data:image/png,notbase64", "x")
    assert [pixel_class(p) for p in (448 * 448, 1024 * 768, 1344 * 1008, 4096 * 2048)] == [
        "under-0.25mp", "0.25-1mp", "1-4mp", "over-4mp"
    ]  # fmt: skip


def _workload(**kw: object) -> Workload:
    return Workload.model_validate({"requestsPerMinute": 60, "promptTokens": {"mean": 20}, "outputTokens": {"mean": 8},
                                    **kw})  # fmt: skip


def test_prompts_carry_images_of_sizes_drawn_by_share_and_each_api_sends_them() -> None:
    sizes = [
        {"name": "small", "width": 64, "height": 64, "share": 0.75},
        {"name": "large", "width": 256, "height": 192, "share": 0.25},
    ]
    w = _workload(images={"perPrompt": 2, "sizes": sizes})
    source = PromptSource(w, "0:0")
    prompts = [source.next() for _ in range(400)]
    large = sum(p.image_size == "large" for p in prompts)
    assert 70 <= large <= 130  # 100 expected; binomial sd 8.7
    for p in prompts[:20]:
        assert len(p.images) == 2 and {(i.width, i.height) for i in p.images} == {
            (64, 64) if p.image_size == "small" else (256, 192)
        }
    p = prompts[0]
    content = p.messages[-1]["content"]
    assert [c["type"] for c in content] == ["image_url", "image_url", "text"] and content[2]["text"] == p.text
    assert decode_data_url(content[0]["image_url"]["url"], "x") == p.images[0].data
    blocks = converse_messages(p)[-1]["content"]
    assert blocks[0] == {"image": {"format": "png", "source": {"bytes": p.images[0].data}}}
    assert blocks[2] == {"text": p.text}
    # the simulator counts the text's words and each image's 28-px squares
    req = protocol.parse_chat({"messages": p.messages}, SimParams().image_tokens)
    per_image = 3 * 3 if p.image_size == "small" else 10 * 7
    assert p.prompt_tokens is not None and req.prompt_tokens == p.prompt_tokens + 2 * per_image
    assert SimParams(image_patch_px=14).image_tokens(448, 448) == 1024


def test_the_simulator_refuses_images_it_cannot_size() -> None:
    gif = "data:image/gif;base64," + base64.b64encode(b"GIF89a").decode()
    for part, says in [({"url": "https://example.invalid/cat.png"}, "needs a data: URL"), ({"url": gif}, "not a PNG")]:
        with pytest.raises(protocol.BadRequestError, match=says):
            protocol.parse_chat({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": part}]}]})


def test_a_datasets_images_from_paths_data_urls_lists_and_parquet_structs(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    a = synthetic_png(40, 30, random.Random(1))
    b = synthetic_png(1200, 1000, random.Random(2))
    (tmp_path / "img" / "a.png").write_bytes(a.data)
    rows = [{"q": "what is it", "image": "img/a.png"}, {"q": "and these", "image": [b.data_url(), "img/a.png"]},
            {"q": "absolute", "image": str(tmp_path / "img" / "a.png")}]  # fmt: skip
    path = tmp_path / "vqa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    corpus = load_corpus(_workload(dataset={"uri": str(path), "promptField": "q", "imageField": "image"}))
    assert corpus is not None and corpus.images is not None
    assert [[(i.width, i.height) for i in row] for row in corpus.images] == [[(40, 30)], [(1200, 1000), (40, 30)],
                                                                             [(40, 30)]]  # fmt: skip
    assert corpus.images[0][0] is corpus.images[1][1], "a file named twice is read once"
    prompt = PromptSource(_workload(dataset={"uri": str(path), "promptField": "q", "imageField": "image"}), "0",
                          corpus).next()  # fmt: skip
    assert prompt.images and prompt.image_size is None  # a dataset's images are grouped by megapixels
    # Hugging Face's image feature in Parquet: a struct {bytes, path}
    table = pa.table({"q": ["x"], "image": [{"bytes": a.data, "path": None}]})
    pq.write_table(table, tmp_path / "hf.parquet")
    w = _workload(dataset={"uri": str(tmp_path / "hf.parquet"), "format": "parquet", "promptField": "q",
                           "imageField": "image"})  # fmt: skip
    corpus = load_corpus(w)
    assert corpus is not None and corpus.images == [(a,)]


@pytest.mark.parametrize(
    ("row", "says"),
    [
        ({"q": "x"}, r"dataset line 1: imageField 'image' is empty; give each row an image"),
        ({"q": "x", "image": "missing.png"}, r"cannot read image missing.png"),
        ({"q": "x", "image": "https://host/cat.png"}, r"sends image bytes; use a path, s3:// or data: URL"),
        ({"q": "x", "image": "notes.txt"}, r"dataset line 1: imageField 'image': not a PNG or JPEG image"),
        ({"q": "x", "image": 7}, r"expected a path, s3:// or data: URL, or \{bytes\}; got int"),
    ],
)
def test_a_datasets_bad_image_is_one_line_naming_the_row(tmp_path: Path, row: dict[str, object], says: str) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DatasetError, match=says):
        load_corpus(_workload(dataset={"uri": str(path), "promptField": "q", "imageField": "image"}))


def test_the_specs_text_only_engines_are_the_engines_whose_api_carries_no_images() -> None:
    assert set(TEXT_ONLY_ENGINES) == {name for name, e in ENGINES.items() if e.api not in IMAGE_APIS}
