"""The CLAP plug-in: ``clap_text`` (text tower: tokens or the pooled embedding AudioLDM uses) and
``clap`` (windowed CLAP audio embeddings), built from tiny presets and from saved directories."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from conftest import assert_close_f32
from sava_clap.models import tiny_clap_model, tiny_clap_text_model, tiny_clap_tokenizer, tiny_feature_extractor
from sava_core.errors import SavaError
from sava_core.registry import get_registries
from sava_core.testing import ComponentTests

PROMPTS = ["a dog barks in a park", "rain falls on a window with distant thunder", ""]
SR = 16000  # the tiny feature extractor's rate


def build(kind: str, name: str, **params):  # type: ignore[no-untyped-def]
    return get_registries()[kind].build(name, params)


class TestClapText(ComponentTests):
    kind, name = "text_encoder", "clap_text"
    params = {"preset": "tiny"}

    def inputs(self):  # type: ignore[no-untyped-def]
        return (PROMPTS,)


class TestClapTextPooled(ComponentTests):
    kind, name = "text_encoder", "clap_text"
    params = {"preset": "tiny", "output": "pooled"}
    expected_shape = (3, 1, 16)

    def inputs(self):  # type: ignore[no-untyped-def]
        return (PROMPTS,)


class TestClapAudio(ComponentTests):
    kind, name = "audio_encoder", "clap"
    params = {"preset": "tiny", "window_seconds": 0.5, "hop_seconds": 0.25}
    expected_shape = (2, 7, 16)  # 2 s: 1 + (2 - 0.5) / 0.25 windows

    def inputs(self):  # type: ignore[no-untyped-def]
        return (torch.rand(2, 1, 2 * SR) * 2 - 1,)


# ------------------------------------------------------------------------------------------- clap_text


def test_text_tokens_and_pooled_widths() -> None:
    tokens, pooled = (build("text_encoder", "clap_text", preset="tiny"),
                      build("text_encoder", "clap_text", preset="tiny", output="pooled"))
    a, b = tokens.encode(PROMPTS), pooled.encode(PROMPTS)
    assert (tokens.dim, tokens.pooled_dim, pooled.dim, pooled.pooled_dim) == (24, 16, 16, 16)
    assert a.tokens.shape[::2] == (3, 24) and a.mask.shape == a.tokens.shape[:2] and a.mask[2].sum() == 2  # <s></s>
    assert b.tokens.shape == (3, 1, 16) and b.mask.all()
    # exact: both encoders come from the same seeded builder and run the same model on the same
    # tokens (same shapes, same kernels), as the kit's determinism check
    assert torch.equal(b.tokens[:, 0], a.pooled) and torch.equal(b.pooled, a.pooled)
    assert torch.allclose(a.pooled.norm(dim=-1), torch.ones(3))


def test_pooled_is_audioldm_conditioning() -> None:
    """AudioLDM's _encode_prompt: max-length padding, ClapTextModelWithProjection.text_embeds, L2-normalised."""
    encoder = build("text_encoder", "clap_text", preset="tiny", output="pooled")
    model, tokenizer = tiny_clap_text_model().eval(), tiny_clap_tokenizer()
    batch = tokenizer(PROMPTS, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                      return_tensors="pt")
    with torch.no_grad():
        expected = F.normalize(model(batch.input_ids, attention_mask=batch.attention_mask).text_embeds, dim=-1)
        got = encoder.encode(PROMPTS).tokens[:, 0]
    # our call of a separately built model: equal up to rounding (0 here, 7e-8 with other kernels)
    # through the 1-layer text model and projection (about 4 blocks)
    assert_close_f32(got, expected, depth=4)


def test_text_round_trip_from_a_pipeline_directory(tmp_path: Path) -> None:
    tiny_clap_text_model().save_pretrained(tmp_path / "text_encoder")
    tiny_clap_tokenizer().save_pretrained(tmp_path / "tokenizer")
    loaded = build("text_encoder", "clap_text", pretrained=str(tmp_path))
    reference = build("text_encoder", "clap_text", preset="tiny")
    with torch.no_grad():
        a, b = loaded.encode(PROMPTS), reference.encode(PROMPTS)
    # a separately loaded copy: equal up to rounding (about 4 blocks); the mask is exact
    assert_close_f32(a.tokens, b.tokens, depth=4)
    assert_close_f32(a.pooled, b.pooled, depth=4)
    assert torch.equal(a.mask, b.mask)


def test_text_from_a_clap_model_directory(tmp_path: Path) -> None:
    """AudioLDM2 ships a whole ClapModel as text_encoder; a plain CLAP directory has config.json at its root."""
    model = tiny_clap_model().eval()
    model.save_pretrained(tmp_path)
    tiny_clap_tokenizer().save_pretrained(tmp_path)
    encoder = build("text_encoder", "clap_text", pretrained=str(tmp_path), output="pooled")
    batch = tiny_clap_tokenizer()(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model.get_text_features(batch.input_ids, attention_mask=batch.attention_mask).pooler_output
        # another padded length (ours pads to max_length): equal up to rounding (about 4 blocks)
        assert_close_f32(encoder.encode(PROMPTS).pooled, expected, depth=4)


def test_text_bad_paths_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(SavaError, match=r"audio_text_encoder\.params\.pretrained.*does not exist"):
        build("text_encoder", "clap_text", pretrained=str(tmp_path / "missing"))
    with pytest.raises(SavaError, match=r"audio_text_encoder\.params\.pretrained.*no config\.json"):
        build("text_encoder", "clap_text", pretrained=str(tmp_path))


@pytest.mark.parametrize("params", [{}, {"preset": "tiny", "pretrained": "/x"}])
def test_exactly_one_weight_source(params: dict) -> None:
    model = get_registries()["text_encoder"].get("clap_text").load_params()
    with pytest.raises(ValidationError, match="exactly one"):
        model.model_validate(params)


# ------------------------------------------------------------------------------------------- clap (audio)


def test_audio_windows_are_embedded_independently() -> None:
    encoder = build("audio_encoder", "clap", preset="tiny", window_seconds=0.5, hop_seconds=0.25)
    audio = torch.rand(1, 2, SR + 1000) * 2 - 1  # stereo, 1.0625 s: 1 + (17000 - 8000) // 4000 = 3 windows
    with torch.no_grad():
        seq = encoder.encode(audio)
        mono = audio.mean(1)[0]
        windows = [encoder.encode(mono[s : s + 8000].reshape(1, 1, -1))[0, 0] for s in (0, 4000, 8000)]
    assert seq.shape == (1, 3, 16) and encoder.latent_dim == 16 and encoder.sample_rate == SR
    # three windows in a batch vs one at a time: other kernels, equal up to rounding through the
    # audio tower (about 6 blocks: patches, two Swin stages, projection); 6e-8 seen
    assert_close_f32(seq[0], torch.stack(windows), depth=6)
    torch.testing.assert_close(seq.norm(dim=-1), torch.ones(1, 3))  # one norm: the float32 defaults
    with torch.no_grad():
        assert encoder.encode(audio[..., :3000]).shape == (1, 1, 16)  # shorter than a window: one (padded) window


def test_audio_matches_get_audio_features() -> None:
    encoder = build("audio_encoder", "clap", preset="tiny", window_seconds=1.0)
    audio = torch.rand(2, 1, SR) * 2 - 1
    inputs = tiny_feature_extractor()([a.numpy() for a in audio[:, 0]], sampling_rate=SR, return_tensors="pt")
    with torch.no_grad():
        expected = tiny_clap_model().eval().get_audio_features(**inputs).pooler_output
        # our call of a separately built model: equal up to rounding through the audio tower (about 6 blocks)
        assert_close_f32(encoder.encode(audio)[:, 0], expected, depth=6)


def test_audio_round_trip_and_audioldm2_layout(tmp_path: Path) -> None:
    audio = torch.rand(1, 1, SR) * 2 - 1
    tiny_clap_model().save_pretrained(tmp_path / "plain")
    tiny_feature_extractor().save_pretrained(tmp_path / "plain")
    tiny_clap_model().save_pretrained(tmp_path / "pipe" / "text_encoder")  # AudioLDM2: extractor in its own folder
    tiny_feature_extractor().save_pretrained(tmp_path / "pipe" / "feature_extractor")
    with torch.no_grad():
        expected = build("audio_encoder", "clap", preset="tiny").encode(audio)
        plain = build("audio_encoder", "clap", pretrained=str(tmp_path / "plain")).encode(audio)
        pipe = build("audio_encoder", "clap", pretrained=str(tmp_path / "pipe"), subfolder="text_encoder").encode(audio)
    # separately loaded copies: equal up to rounding (memory layout; 6.7e-8 seen) through the audio
    # tower (about 6 blocks)
    assert_close_f32(plain, expected, depth=6)
    assert_close_f32(pipe, expected, depth=6)


def test_audio_window_longer_than_the_model_clip() -> None:
    with pytest.raises(SavaError, match=r"window_seconds.*longer than the model's 1 s clips"):
        build("audio_encoder", "clap", preset="tiny", window_seconds=2.0)


def test_laion_checkpoints_need_the_extra(tmp_path: Path) -> None:
    if importlib.util.find_spec("laion_clap") is not None:  # not installed in the dev environment (numpy<2)
        pytest.skip("laion-clap is installed: the missing-package message cannot be checked")
    with pytest.raises(SavaError, match=r'pip install "sava\[laion-clap\]"'):
        build("audio_encoder", "clap", pretrained=str(tmp_path / "630k-audioset-best.pt"), checkpoint_format="laion")
    params = get_registries()["audio_encoder"].get("clap").load_params()
    with pytest.raises(ValidationError, match="checkpoint_format laion needs `pretrained`"):
        params.model_validate({"preset": "tiny", "checkpoint_format": "laion"})
