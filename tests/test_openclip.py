"""The OpenCLIP plug-in: frame-level CLIP image embeddings (``openclip``, an analysis encoder with no
latent grid) and CLIP text features (``openclip_text``), from the tiny preset and from a local
OpenCLIP directory (``open_clip_config.json`` + safetensors weights)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from conftest import assert_close_f32
from sava_core.errors import SavaError
from sava_core.registry import get_registries
from sava_core.testing import ComponentTests
from sava_openclip.models import TINY_CONFIG

PROMPTS = ["a dog barks in a park", ""]
EMBED = TINY_CONFIG["embed_dim"]
CONTEXT = TINY_CONFIG["text_cfg"]["context_length"]


def build(kind: str, name: str, **params):  # type: ignore[no-untyped-def]
    return get_registries()[kind].build(name, params)


def video(shape: tuple[int, ...] = (2, 3, 3, 40, 56)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def encoder():  # type: ignore[no-untyped-def]
    return build("video_encoder", "openclip", preset="tiny")


@pytest.fixture(scope="module")
def text_encoder():  # type: ignore[no-untyped-def]
    return build("text_encoder", "openclip_text", preset="tiny")


class TestOpenCLIPVideo(ComponentTests):
    kind, name = "video_encoder", "openclip"
    params = {"preset": "tiny"}
    expected_shape = (2, 3, EMBED)

    def inputs(self):  # type: ignore[no-untyped-def]
        return (video(),)


class TestOpenCLIPText(ComponentTests):
    kind, name = "text_encoder", "openclip_text"
    params = {"preset": "tiny"}
    expected_shape = (2, CONTEXT, EMBED)

    def inputs(self):  # type: ignore[no-untyped-def]
        return (PROMPTS,)


def test_preprocessing_matches_open_clips_transform(encoder) -> None:  # type: ignore[no-untyped-def]
    """Shortest side to the image size, center crop, mean/std: as open_clip's PIL transform of the
    8-bit frame, up to the difference between torch's and PIL's antialiased bicubic resampling."""
    frame = (video((1, 1, 3, 40, 56))[0, 0] * 255).round() / 255
    transform = open_clip.image_transform(32, is_train=False)
    pil = Image.fromarray((frame.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    expected = transform(pil)
    ours = encoder.preprocess(frame[None])[0]
    assert ours.shape == expected.shape == (3, 32, 32)
    assert (ours - expected).abs().mean() < 0.03


def test_frame_embeddings_keep_frame_order(encoder) -> None:  # type: ignore[no-untyped-def]
    x = video()
    with torch.no_grad():
        out = encoder.encode(x)
        single = encoder.model.encode_image(encoder.preprocess(x[1, 2:3]), normalize=True)
    # frames in batches vs one frame alone: other kernels, equal up to rounding through the 1-layer
    # ViT (about 4 blocks: patches, attention, MLP, projection); 9e-8 seen
    assert_close_f32(out[1, 2], single[0], depth=4)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 3))  # one norm: the float32 defaults
    assert encoder.latent_dim == EMBED and encoder.frame_rate == 8.0
    with pytest.raises(NotImplementedError, match="no latent grid"):
        encoder.encode_grid(x)
    with pytest.raises(SavaError, match=r"\(B, F, 3, H, W\)"):
        encoder.encode(x[0])


def test_unnormalised_embeddings_are_an_option() -> None:
    raw = build("video_encoder", "openclip", preset="tiny", normalize=False, frame_batch_size=2)
    with torch.no_grad():
        assert not torch.allclose(raw.encode(video()).norm(dim=-1), torch.ones(2, 3))


def test_text_tokens_and_pooled_embedding(text_encoder) -> None:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        out = text_encoder.encode(PROMPTS)
        ids = text_encoder.tokenizer(PROMPTS)
        expected = text_encoder.model.encode_text(ids)
    # we project every token and then pool, open_clip pools and then projects: another matmul shape
    # after the same transformer (about 2 ops); 2.4e-7 seen at |values| ~ 2
    assert_close_f32(out.pooled, expected, depth=2)
    end = out.mask.sum(1) - 1
    # a gather from the same tensor (equal in fact): the float32 defaults
    torch.testing.assert_close(out.tokens[torch.arange(2), end], out.pooled)  # pooled = the end-of-text token
    assert out.mask[1].sum() == 2 and out.mask[0].sum() == (ids[0] != 0).sum()
    assert text_encoder.dim == EMBED


def _save_model_dir(folder: Path) -> None:
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CONFIG)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CONFIG, "preprocess_cfg": {}}))
    save_file(model.state_dict(), str(folder / "open_clip_model.safetensors"))


def test_local_directory_round_trip(tmp_path: Path, encoder, text_encoder) -> None:  # type: ignore[no-untyped-def]
    _save_model_dir(tmp_path / "model")
    loaded = build("video_encoder", "openclip", pretrained=str(tmp_path / "model"))
    loaded_text = build("text_encoder", "openclip_text", pretrained=str(tmp_path / "model"))
    x = video()
    with torch.no_grad():
        # separately loaded copies: equal up to rounding through the 1-layer towers (about 4 blocks)
        assert_close_f32(loaded.encode(x), encoder.encode(x), depth=4)
        assert_close_f32(loaded_text.encode(PROMPTS).tokens, text_encoder.encode(PROMPTS).tokens, depth=4)


def test_wrong_weights_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SavaError, match=r"video_encoder\.params\.pretrained.*does not exist"):
        build("video_encoder", "openclip", pretrained=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SavaError, match="no open_clip_config.json"):
        build("video_encoder", "openclip", pretrained=str(tmp_path / "empty"))
    _save_model_dir(tmp_path / "model")
    (tmp_path / "model" / "open_clip_model.safetensors").rename(tmp_path / "weights.safetensors")
    with pytest.raises(SavaError, match="has no weights"):
        build("video_encoder", "openclip", pretrained=str(tmp_path / "model"))
    with pytest.raises(SavaError, match="set `architecture`"):
        build("video_encoder", "openclip", pretrained=str(tmp_path / "weights.safetensors"))
    with pytest.raises(SavaError, match="cannot load"):
        build("video_encoder", "openclip", pretrained=str(tmp_path / "weights.safetensors"), architecture="ViT-B-32")
