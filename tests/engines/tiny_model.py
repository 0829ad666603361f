"""Tiny random models for the real-engine tests, made locally (no weights can be downloaded): a
byte-level BPE tokenizer trained on this machine's own Python sources, with a chat template, and
a 2-layer Llama; or a vision-language model of Qwen2-VL's architecture (vLLM serves it with
image inputs, and its image tokens grow with the image's size). Run with the engine's Python:
``python tiny_model.py llama|qwen2-vl OUT_DIR``.

head_dim is 32 (hidden 64 / 2 heads): vLLM's CPU attention backend accepts 32, 64, 80, …; 16
crashes the engine on its first request while /health still answers 200. Qwen2-VL: an image
becomes (h/28)·(w/28) tokens after its resize to multiples of 28 pixels within [MIN_PIXELS,
MAX_PIXELS], plus <|vision_start|> and <|vision_end|>; mrope_section adds up to head_dim / 2. Its
chat template ends each message with an explicit newline: transformers renders with trim_blocks.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
)

SPECIAL = ["<unk>", "<s>", "</s>", "<pad>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def corpus(limit: int = 400) -> list[str]:
    """Text to train on: the standard library's own sources (always here, deterministic)."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:limit]
    return [f.read_text(errors="replace") for f in files]


VISION = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
MIN_PIXELS, MAX_PIXELS = 56 * 56, 512 * 512
VISION_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for p in m['content'] %}"
    "{% if p['type'] in ['image', 'image_url'] %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif p['type'] == 'text' %}{{ p['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def tokenizer(vision: bool = False) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = [*SPECIAL, *VISION] if vision else SPECIAL
    trainer = trainers.BpeTrainer(vocab_size=4000, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", additional_special_tokens=VISION if vision else None,
                                   chat_template=VISION_TEMPLATE if vision else CHAT_TEMPLATE)  # fmt: skip


def llama(out: Path) -> None:
    fast = tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=4096, bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, torch_dtype="float32",
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(config).save_pretrained(out)
    fast.save_pretrained(out)


def qwen2_vl(out: Path) -> None:
    fast = tokenizer(vision=True)
    ids = {t: fast.convert_tokens_to_ids(t) for t in VISION}
    torch.manual_seed(0)
    text = {"vocab_size": len(fast), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]},
            "bos_token_id": fast.bos_token_id, "eos_token_id": fast.eos_token_id,
            "pad_token_id": fast.pad_token_id}  # fmt: skip
    vision = {"depth": 2, "embed_dim": 64, "hidden_size": 64, "mlp_ratio": 2, "num_heads": 2, "patch_size": 14,
              "spatial_merge_size": 2, "temporal_patch_size": 2}  # fmt: skip
    config = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                           video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"])  # fmt: skip
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(config, key, getattr(fast, key))
    config.dtype = "float32"
    size = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    try:
        from transformers import Qwen2VLVideoProcessor

        video = Qwen2VLVideoProcessor(size=size)
    except ImportError:
        video = None
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(size=size), tokenizer=fast,
                                 video_processor=video, chat_template=VISION_TEMPLATE)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    Qwen2VLForConditionalGeneration(config).to(torch.float32).save_pretrained(out)
    processor.save_pretrained(out)
    fast.save_pretrained(out)


if __name__ == "__main__":
    {"llama": llama, "qwen2-vl": qwen2_vl}[sys.argv[1]](Path(sys.argv[2]))
