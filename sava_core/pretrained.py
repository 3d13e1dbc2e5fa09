"""Where real components get their weights, and the offline tokenizers of their ``tiny`` presets.

Architecture and weights are separate settings (DESIGN.md): a component's name picks its code, its
``pretrained`` parameter picks weights, either a local directory (a diffusers / transformers layout)
or a hub id. Nothing is downloaded unless the user wrote a hub id, and even then a run never hangs on
a dead network: :func:`locate` first looks in the local hub cache, then tries one download with short
timeouts, and otherwise stops with a message naming the setting to change.

``tiny`` presets build the same classes from small configs with random weights; their tokenizers are
trained here, in memory, on a fixed corpus (:func:`tiny_tokenizer`), so they need no files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from sava_core.errors import SavaError

#: The fixed corpus tiny tokenizers are trained on (words of the synthetic world's captions and of
#: typical audio-visual prompts); deterministic, so a tiny preset is the same on every machine.
TINY_CORPUS = [
    "a red ball bounces on the floor with a loud thud",
    "a dog barks in a park while the wind blows",
    "a blue cube hits the ground twice and a bell rings",
    "waves crash on the beach and birds sing",
    "a person plays the guitar in a quiet room",
    "a car engine hums on a busy street at night",
    "a green triangle falls and hits a metal plate three times",
    "rain falls on a window with distant thunder",
    "an orange circle moves left and right over grass, hum in the background",
    "a drum is hit once, then silence, then a whistle",
    "the quick brown fox jumps over the lazy dog",
    "a cat meows and a door closes softly",
    "someone speaks while music plays, off-screen applause",
    "a purple square slides on sand and a crow caws",
]

Family = Literal["t5", "roberta", "gpt2", "gemma", "clip"]


def looks_like_path(value: str) -> bool:
    """A value is a local path if it exists or is written like one (absolute, ~, ./ or ../)."""
    return Path(value).expanduser().exists() or value.startswith(("/", "~", "./", "../")) or value.startswith(".")


def locate(pretrained: str, setting: str, *, must_contain: str | None = None,
           allow_patterns: list[str] | None = None) -> str:
    """A local directory (or file) for ``pretrained``: the path itself, or a hub id resolved through the
    local hub cache first, then one short-timeout download. ``setting`` names the recipe key (for
    example ``model.video_backbone.params.pretrained``) in every error message. ``allow_patterns``
    limits a hub download to the files a component needs (globs, as in ``snapshot_download``)."""
    if looks_like_path(pretrained):
        path = Path(pretrained).expanduser()
        if not path.exists():
            raise SavaError(f"{setting}: local path {path} does not exist; point it at a downloaded checkpoint "
                            "directory, or use preset=tiny for random weights")
        if must_contain and not (path / must_contain).exists():
            raise SavaError(f"{setting}: {path} has no {must_contain}; point it at the model's root directory "
                            "(the one with model_index.json or config.json)")
        return str(path)
    return _from_hub(pretrained, setting, allow_patterns)


def _from_hub(repo_id: str, setting: str, allow_patterns: list[str] | None = None) -> str:
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return snapshot_download(repo_id, local_files_only=True, allow_patterns=allow_patterns)
    except HFValidationError:
        raise SavaError(f"{setting}: {repo_id!r} is neither an existing local path nor a valid hub id") from None
    except Exception:  # noqa: BLE001 - not in the local cache: try the network once, below
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise SavaError(f"{setting}: hub id {repo_id!r} is not in the local hub cache and HF_HUB_OFFLINE is set; "
                        "download it on a machine with access and set this to the local directory")
    try:
        return snapshot_download(repo_id, allow_patterns=allow_patterns)
    except Exception as exc:  # noqa: BLE001 - any network or auth failure ends with the same advice
        raise SavaError(f"{setting}: could not fetch hub id {repo_id!r} ({type(exc).__name__}); with no access to "
                        "the hub, download it elsewhere and set this to the local directory") from None


def torch_dtype(name: str) -> Any:
    """``"float32" | "float16" | "bfloat16"`` -> the torch dtype."""
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def cast(module: Any, dtype: str) -> Any:
    """``module`` in ``dtype`` ("float32" | "float16" | "bfloat16"); a float32 module is returned as it
    is (a no-op ``to`` makes diffusers warn)."""
    return module if dtype == "float32" else module.to(torch_dtype(dtype))


def tiny_tokenizer(family: Family, vocab_size: int = 300, model_max_length: int = 32) -> Any:
    """A transformers tokenizer of ``family`` trained in memory on :data:`TINY_CORPUS`.

    ``t5``: a Unigram model (``T5TokenizerFast``); ``roberta`` / ``gpt2``: byte-level BPE with that
    family's special tokens; ``gemma``: byte-fallback BPE over "▁"-joined text (Gemma's special tokens
    at ids 0-4, <bos> first); ``clip``: the real OpenAI CLIP BPE (49408 tokens) that open_clip ships,
    so ``vocab_size`` does not apply. Deterministic; nothing is downloaded."""
    if family == "clip":
        return _clip_tokenizer(model_max_length)
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    trainer: Any
    if family == "t5":
        from transformers import T5TokenizerFast  # type: ignore[attr-defined]  # lazy-exported

        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"],
                                          unk_token="<unk>", show_progress=False)
        tok.train_from_iterator(TINY_CORPUS, trainer)
        vocab = [tuple(piece) for piece in json.loads(tok.to_str())["model"]["vocab"]]
        return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=model_max_length)
    specials = {"roberta": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "gpt2": ["<|endoftext|>"],
                "gemma": ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]}[family]
    if family == "gemma":
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        tok.normalizer = normalizers.Replace(" ", "▁")
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TINY_CORPUS, trainer)
    model = json.loads(tok.to_str())["model"]
    merges: Any
    vocab, merges = model["vocab"], [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    if family == "gemma":
        from transformers import GemmaTokenizer

        return GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, model_max_length=model_max_length)
    if family == "roberta":
        from transformers import RobertaTokenizer

        return RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
    from transformers import GPT2Tokenizer

    return GPT2Tokenizer(vocab=vocab, merges=merges, pad_token="<|endoftext|>", model_max_length=model_max_length)


def _clip_tokenizer(model_max_length: int) -> Any:
    """transformers' CLIPTokenizer over the CLIP BPE vocabulary shipped inside open_clip."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    bpe = SimpleTokenizer()
    merges = [pair for pair, _ in sorted(bpe.bpe_ranks.items(), key=lambda kv: kv[1])]
    vocab = {{"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}.get(k, k): v
             for k, v in bpe.encoder.items()}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
