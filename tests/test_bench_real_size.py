"""benchmarks/bench_real_size.py at its tiny preset: the figures a released-size GPU run reports are all
written (sampling by sava and by the diffusers pipeline with their ratio, peak memory, the Stage II
step with and without the memory options), and released sizes never run without CUDA."""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest
import torch

from conftest import REPO


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return importlib.import_module("bench_real_size")


def test_tiny_preset_writes_sampling_and_stage2_figures(bench: Any, tmp_path: Any) -> None:
    bench.main(tmp_path, preset="tiny", families=["cogvideox", "ltx2"], steps=2)
    result = json.loads((tmp_path / "real_size.json").read_text())
    cuda = torch.cuda.is_available()
    assert (result["preset"], result["steps"], result["device"]) == ("tiny", 2, "cuda" if cuda else "cpu")
    assert result["device_name"] and result["machine"]["torch"] == torch.__version__
    family = result["families"]["cogvideox"]
    assert family["recipe"] == "t2av_cogvideox_audioldm" and family["dtype"] == "float32"
    assert family["shapes"] == {"media": [1, 17, 3, 32, 32], "grid": [5, 4, 4, 4], "text": [128, 32]}
    sampling = family["sampling"]
    assert (sampling["batch"], sampling["steps"], sampling["guidance_passes"]) == (2, 2, 2)
    for side in ("sava", "pipeline"):
        figures = sampling[side]
        assert figures["seconds_per_clip"] > 0 and figures["seconds_per_step"] > 0 and figures["decode_seconds"] > 0
        assert (figures["peak_mib"] is None) == (not cuda)  # no peak memory figure on a CPU
    assert sampling["ratio_sava_over_pipeline"] == pytest.approx(
        sampling["sava"]["seconds_per_clip"] / sampling["pipeline"]["seconds_per_clip"])
    assert sampling["sava"]["flops_per_forward"] > 0 and sampling["sava"]["achieved_flops_per_second"] > 0
    stage2 = family["stage2_step"]
    assert stage2["direction"] == "ta2v" and stage2["extra_tokens"] == [5, 16]
    for key, on in (("with_options", True), ("without_options", False)):
        step = stage2[key]
        assert step["options"]["backbone"] == {"gradient_checkpointing": on, "dtype": "bfloat16" if on else "float32"}
        assert step["options"]["vae"] == {"enable_slicing": on, "enable_tiling": on,
                                          "dtype": "bfloat16" if on else "float32"}
        assert step["options"]["mixed_precision"] == ("bf16" if on else "no")
        for part in ("encode", "train_step"):
            assert step[part]["seconds"] > 0 and (step[part]["peak_mib"] is None) == (not cuda)
        assert step["trainable_parameters"] > 0
    joint = result["families"]["ltx2"]  # sava calls LTX2Pipeline itself: the same call on both sides
    assert joint["stage2_step"].startswith("not applicable") and joint["sampling"]["batch"] == 2
    assert joint["sampling"]["ratio_sava_over_pipeline"] == pytest.approx(
        joint["sampling"]["sava"]["seconds_per_clip"] / joint["sampling"]["pipeline"]["seconds_per_clip"])


def test_released_sizes_do_not_run_without_cuda(bench: Any, tmp_path: Any) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: released sizes would run")
    bench.main(tmp_path, preset="released")
    result = json.loads((tmp_path / "real_size.json").read_text())
    assert result["preset"] == "released" and "families" not in result
    assert result["released_size"].startswith("not run: released sizes run only where CUDA is available")
