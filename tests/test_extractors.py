"""Evaluation extractors: the plug-in test kit on every tiny preset, checkpoint verification, and the
published architectures' state-dict layouts (on the meta device) and loading."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest
import torch

from conftest import assert_close_f32
from sava_core.errors import SavaError
from sava_core.registry import get_registries
from sava_core.testing import ComponentTests


def _audio(seconds: float, rate: int = 16000) -> torch.Tensor:
    return torch.rand(2, 1, round(seconds * rate)) * 2 - 1


class TestVGGish(ComponentTests):
    kind, name = "extractor", "vggish"
    params = {"preset": "tiny"}
    expected_shape = (4, 16)  # 2 clips x 2 windows of 0.96 s

    def inputs(self):
        return (_audio(2.0),)


class TestPANNs(ComponentTests):
    kind, name = "extractor", "panns_cnn14"
    params = {"preset": "tiny"}
    expected_shape = (2, 16)

    def inputs(self):
        return (_audio(1.0),)

    def test_logits_are_audioset_classes(self):
        out = self.build().extract(_audio(1.0))
        assert out.logits.shape == (2, 527)


class TestCLAPAudio(ComponentTests):
    kind, name = "extractor", "clap"
    params = {"preset": "tiny"}
    expected_shape = (2, 16)

    def inputs(self):
        return (_audio(1.0, 48000),)


class TestCLAPText(ComponentTests):
    kind, name = "extractor", "clap"
    params = {"preset": "tiny", "tower": "text"}
    expected_shape = (2, 16)

    def inputs(self):
        return (["a dog barks", "rain on a tin roof"],)


class TestI3D(ComponentTests):
    kind, name = "extractor", "i3d"
    params = {"preset": "tiny", "size": 32}
    expected_shape = (2, 400)

    def inputs(self):
        return (torch.rand(2, 16, 3, 32, 32),)


class TestImageBindVision(ComponentTests):
    kind, name = "extractor", "imagebind"
    params = {"preset": "tiny", "size": 32}
    expected_shape = (6, 16)  # one row per frame

    def inputs(self):
        return (torch.rand(2, 3, 3, 32, 32),)


class TestImageBindAudio(ComponentTests):
    kind, name = "extractor", "imagebind"
    params = {"preset": "tiny", "tower": "audio"}
    expected_shape = (2, 16)

    def inputs(self):
        return (_audio(2.5),)


class TestCAVPVideo(ComponentTests):
    kind, name = "extractor", "cavp"
    params = {"preset": "tiny", "size": 32}
    expected_shape = (8, 16)  # one row per step

    def inputs(self):
        return (torch.rand(2, 4, 3, 32, 32),)


class TestCAVPAudio(ComponentTests):
    kind, name = "extractor", "cavp"
    params = {"preset": "tiny", "tower": "audio"}
    expected_shape = (8, 16)  # 1 s at 4 steps per second

    def inputs(self):
        return (_audio(1.0),)


HAS_PASST = importlib.util.find_spec("hear21passt") is not None
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.skipif(not HAS_PASST, reason="needs the optional hear21passt package (sava[passt])")
class TestPaSST(ComponentTests):
    kind, name = "extractor", "passt"
    params = {"preset": "tiny"}
    expected_shape = (2, 16)

    def inputs(self):
        return (_audio(1.0, 32000),)

    def test_logits_are_audioset_classes(self):
        out = self.build().extract(_audio(1.0, 32000))
        assert out.logits.shape == (2, 527)


def _build(name, **params):
    return get_registries()["extractor"].build(name, params)


def test_missing_checkpoint_names_the_setting(tmp_path):
    with pytest.raises(SavaError, match=r"extractor vggish: checkpoint .*nope\.pth not found; set its `checkpoint`"):
        _build("vggish", checkpoint=str(tmp_path / "nope.pth"))
    with pytest.raises(SavaError, match="no checkpoint given.*never downloaded"):
        _build("panns_cnn14")


def test_wrong_sha256_is_refused(tmp_path):
    path = tmp_path / "vggish-10086976.pth"
    torch.save({"x": torch.zeros(1)}, path)
    with pytest.raises(SavaError, match="does not start with 10086976"):
        _build("vggish", checkpoint=str(path))
    with pytest.raises(SavaError, match="has sha256 .* but `sha256` expects " + "0" * 64):
        _build("i3d", checkpoint=str(path), sha256="0" * 64)


def test_unpinned_hash_asks_for_it(tmp_path):
    path = tmp_path / "Cnn14_16k_mAP=0.438.pth"
    torch.save({"model": {"x": torch.zeros(1)}}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(SavaError, match=f"extractor_params.sha256={digest}"):
        _build("panns_cnn14", checkpoint=str(path))
    with pytest.raises(SavaError, match="does not fit the architecture"):
        _build("panns_cnn14", checkpoint=str(path), sha256=digest)


def test_published_i3d_loads_a_verified_state_dict(tmp_path):
    from sava_metrics.i3d import InceptionI3d

    torch.manual_seed(0)
    net = InceptionI3d()
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}  # as older files
    path = tmp_path / "rgb_imagenet.pt"
    torch.save({"state_dict": state}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    extractor = _build("i3d", checkpoint=str(path), sha256=digest, frames=10, size=64)
    assert torch.equal(extractor.net.logits.conv3d.weight, net.logits.conv3d.weight)
    protocol = extractor.protocol()
    assert protocol["checkpoint_sha256"] == digest and protocol["checkpoint"] == "rgb_imagenet.pt"
    assert protocol["frames"] == 10 and "bilinear 64x64" in protocol["resize"]
    assert extractor.extract(torch.rand(1, 10, 3, 64, 64)).embeddings.shape == (1, 400)


def test_vggish_front_end_is_the_tf_one():
    from sava_metrics.vggish import log_mel_examples, vggish_mel_matrix

    mel = vggish_mel_matrix()
    assert mel.shape == (257, 64) and bool((mel[0] == 0).all())
    # a 1 kHz tone puts its energy in the band whose HTK-mel centre is nearest 1 kHz
    t = torch.arange(16000 * 2, dtype=torch.float64) / 16000
    examples = log_mel_examples(torch.sin(2 * torch.pi * 1000 * t)[None], mel)
    centres = torch.linspace(1127 * torch.log1p(torch.tensor(125 / 700, dtype=torch.float64)),
                             1127 * torch.log1p(torch.tensor(7500 / 700, dtype=torch.float64)), 66)[1:-1]
    expected = int((centres - 1127 * torch.log1p(torch.tensor(1000 / 700))).abs().argmin())
    assert examples.shape == (1, 2, 96, 64)
    assert int(examples[0, 0].mean(0).argmax()) == expected


# ------------------------------------------------------------------------------------------ CAVP


def _expected_keys(name):
    rows = (line.split(" ", 1) for line in (FIXTURES / name).read_text().splitlines() if line and line[0] != "#")
    return {key: tuple(int(n) for n in shape.strip("[] ").split(",") if n.strip()) for key, shape in rows}


def test_cavp_has_the_published_keys_and_shapes():
    from sava_metrics.cavp import CAVPNet

    with torch.device("meta"):
        net = CAVPNet()
    own = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    expected = _expected_keys("cavp_keys.txt")
    assert len(expected) == 402 and own == expected


def _tiny_cavp_checkpoint(tmp_path, monkeypatch):
    """A training-style checkpoint ({"state_dict": {"module." + key: ...}, ...}) of the tiny CAVP, loaded
    through the published code path."""
    from sava_metrics import cavp

    monkeypatch.setattr(cavp, "PUBLISHED_CONFIG", cavp.TINY_CONFIG)
    torch.manual_seed(1)
    net = cavp.CAVPNet(cavp.TINY_CONFIG).eval()
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    path = tmp_path / "cavp_epoch66.ckpt"
    torch.save({"epoch": 66, "state_dict": {**state, "module.spec_augmenter.dummy": torch.zeros(1)}}, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest(), net


def test_published_cavp_loads_a_training_checkpoint(tmp_path, monkeypatch):
    path, digest, net = _tiny_cavp_checkpoint(tmp_path, monkeypatch)
    video = _build("cavp", checkpoint=str(path), sha256=digest, size=32)
    audio = _build("cavp", checkpoint=str(path), sha256=digest, tower="audio")
    frames = torch.rand(1, 4, 3, 32, 32)
    # a net loaded from the checkpoint vs the one saved: equal up to rounding through the tiny video
    # tower (about 6 blocks: stem, four stages, projection)
    assert_close_f32(video.extract(frames).embeddings, net.encode_video(frames)[0], depth=6)
    assert audio.extract(_audio(2.0)[:1]).embeddings.shape == (8, 16)  # 4 steps per second
    protocol = audio.protocol()
    assert protocol["checkpoint_sha256"] == digest and protocol["ignored_checkpoint_keys"] == 1
    assert "hop 250" in protocol["frontend"] and protocol["steps_per_second"] == 4


def test_cavp_refuses_a_checkpoint_missing_keys(tmp_path):
    path = tmp_path / "cavp_epoch66.ckpt"
    torch.save({"state_dict": {"module.logit_scale": torch.zeros(())}}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(SavaError, match=r"extractor cavp: checkpoint .* does not fit .*missing \['spec_encoder"):
        _build("cavp", checkpoint=str(path), sha256=digest)


def test_cavp_audio_too_short_for_a_step():
    with pytest.raises(SavaError, match="too short for one CAVP step"):
        _build("cavp", preset="tiny", tower="audio").extract(_audio(0.2))


# ------------------------------------------------------------------------------------------ ImageBind (AVHScore)


def test_published_imagebind_extractor_records_the_checkpoint(tmp_path, monkeypatch):
    from sava_imagebind import model as ib

    monkeypatch.setattr(ib, "HUGE", ib.TINY)
    torch.manual_seed(2)
    towers = ib.ImageBindTowers(ib.TINY).eval()
    path = tmp_path / "imagebind_huge.pth"
    torch.save(towers.state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    audio = _build("imagebind", checkpoint=str(path), sha256=digest, tower="audio")
    wave = _audio(3.0)[:1]
    expected = towers.embed("audio", ib.audio_clips(wave[0, 0])).mean(0)
    # towers loaded from the checkpoint vs the ones saved: equal up to rounding through the 2-layer
    # audio tower (about 6 blocks)
    assert_close_f32(audio.extract(wave).embeddings[0], expected, depth=6)
    protocol = audio.protocol()
    assert protocol["checkpoint_sha256"] == digest and "CC-BY-NC" in protocol["license"]
    with pytest.raises(SavaError, match="no published sha256 is pinned"):
        _build("imagebind", checkpoint=str(path))


# ------------------------------------------------------------------------------------------ PaSST


def test_passt_without_the_extra_names_it(monkeypatch):
    import sys

    for module in ("hear21passt", "hear21passt.models", "hear21passt.models.passt", "hear21passt.models.preprocess"):
        monkeypatch.setitem(sys.modules, module, None)  # as if the package were not installed
    with pytest.raises(SavaError, match=r'pip install "sava\[passt\]"'):
        _build("passt", preset="tiny")


@pytest.mark.skipif(not HAS_PASST, reason="needs the optional hear21passt package (sava[passt])")
def test_published_passt_loads_a_local_state_dict(tmp_path, monkeypatch):
    from sava_metrics import passt

    monkeypatch.setattr(passt, "PUBLISHED_SIZE", passt.TINY_SIZE)
    torch.manual_seed(4)
    net = passt.PaSSTNet(passt.TINY_SIZE).eval()
    path = tmp_path / "passt-s-f128-p16-s10-ap.476-swa.pt"
    torch.save(net.net.state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    extractor = _build("passt", checkpoint=str(path), sha256=digest, clip_seconds=1.0)
    wave = _audio(1.0, 32000)
    logits, embedding = net(torch.nn.functional.pad(wave.mean(1), (0, 9 * 32000)))  # zero-padded to 10 s
    out = extractor.extract(wave)
    # a net loaded from the state dict vs the one saved: equal up to rounding through the mel front
    # end and the 1-layer transformer (about 4 blocks)
    assert_close_f32(out.embeddings, embedding, depth=4)
    assert_close_f32(out.logits, logits, depth=4)
    assert extractor.protocol()["sample_rate"] == 32000 and extractor.protocol()["clip_seconds"] == 1.0
    with pytest.raises(Exception, match="less than or equal to 10"):
        _build("passt", preset="tiny", clip_seconds=12)
