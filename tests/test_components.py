"""Every built-in component and the example third-party plug-in pass the plug-in test kit."""

from __future__ import annotations

import pytest
import torch

from sava_core.testing import ComponentTests


class TestMLPAdapter(ComponentTests):
    kind, name = "adapter", "mlp"
    params = {"hidden": 16, "layers": 3}
    runtime = {"in_dim": 6, "out_dim": 4}
    expected_shape = (2, 3, 4)

    def inputs(self):
        return (torch.randn(2, 3, 6),)


class TestJointHardMask(ComponentTests):
    kind, name = "mask", "mlp"
    params = {"mode": "joint", "hard": True, "hidden": 8, "partner_noise": 0.5, "partner_dropout": 0.5}
    runtime = {"dim": 5}
    expected_shape = (2, 3, 5)

    def inputs(self):
        return torch.randn(2, 3, 5), torch.randn(2, 3, 5)


class TestMLPDecoder(ComponentTests):
    kind, name = "decoder", "mlp"
    params = {"hidden": 8, "activation": "relu", "dropout": 0.1}
    runtime = {"in_dim": 4, "out_dim": 7}
    expected_shape = (2, 3, 7)

    def inputs(self):
        return (torch.randn(2, 3, 4),)


class TestMLPProjector(ComponentTests):
    kind, name = "projector", "mlp"
    params = {"layers": 1}
    runtime = {"in_dim": 7, "out_dim": 4}
    expected_shape = (2, 3, 4)

    def inputs(self):
        return (torch.randn(2, 3, 7),)


class TestFactorWorld(ComponentTests):
    kind, name = "dataset", "factor_world"
    params = {"n_train": 20, "n_val": 10, "n_test": 12, "d": 8, "length": 5}
    expected_shape = (12, 5, 8)

    def inputs(self):
        return ("test",)


class TestExamplePluginAdapter(ComponentTests):
    kind, name = "adapter", "gated_linear"
    params = {"gate_bias": 0.5}
    runtime = {"in_dim": 6, "out_dim": 4}
    expected_shape = (2, 3, 4)

    @pytest.fixture(autouse=True)
    def _plugin(self, with_example_plugin):
        yield

    def inputs(self):
        return (torch.randn(2, 3, 6),)


class TestHardConcreteMask(ComponentTests):
    kind, name = "mask", "hard_concrete"
    params = {"mode": "joint", "hidden": 8}
    runtime = {"dim": 5}
    expected_shape = (2, 3, 5)

    def inputs(self):
        return torch.randn(2, 3, 5), torch.randn(2, 3, 5)


def _tones(levels: list[float]) -> list:
    from sava_core.clips import MediaItem

    t = torch.arange(1600) / 16000
    return [MediaItem(f"c{i}", audio=a * torch.sin(2 * torch.pi * 440 * t)[None], sample_rate=16000)
            for i, a in enumerate(levels)]


class TestExamplePluginMetric(ComponentTests):
    kind, name = "metric", "loudness_gap"
    params = {"floor_db": -90.0}

    @pytest.fixture(autouse=True)
    def _plugin(self, with_example_plugin):
        yield

    def inputs(self):
        return _tones([0.5, 0.25]), _tones([0.1, 0.1, 0.1])
