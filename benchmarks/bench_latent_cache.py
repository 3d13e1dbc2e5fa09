"""One Stage I epoch with cached latents against re-encoding every clip in the epoch, in the same run.

The encoders are real architectures at their ``tiny`` presets: the CogVideoX VAE for video and the
AudioLDM VAE for audio (random weights: the cost, not the values, matters here). The data is the
media world (17 frames of 32 x 32 at 8 fps, 2.125 s, 16 kHz), decoded once into memory for both
arms so that neither pays for rendering. Both arms run the same Stage I training steps (recipe-built
AlignModel, AdamW, batch 16):

* ``reencode``: every batch of clips goes through both encoders, then one training step;
* ``cached``: the latents come from :func:`sava_core.cache.encode_split` (built before the timing in
  a temporary cache root; the epoch reads the shards from disk through the cache and trains).

Goal (issue 7): the cached epoch is at least 10 times faster. Writes ``latent_cache.json``.

    python benchmarks/bench_latent_cache.py      # -> benchmarks/results/latent_cache.json
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine  # noqa: E402

from sava_core.io import atomic_write_json  # noqa: E402

REPO = Path(__file__).parent.parent
DATA = {"name": "media_world", "params": {"n_train": 64, "n_val": 8, "n_test": 8, "height": 32, "width": 32,
                                         "fps": 8.0, "duration": 2.125, "sample_rate": 16000}}
ENCODERS = {"video_encoder": {"name": "cogvideox_vae", "params": {"preset": "tiny", "frame_rate": 8.0}},
            "audio_encoder": {"name": "audioldm_vae", "params": {"preset": "tiny"}}}


def main(out_dir: Path, batch_size: int = 16) -> dict[str, Any]:
    from sava_core.alignment import AlignModel
    from sava_core.cache import align_time, encode_split
    from sava_core.losses import AlignObjective
    from sava_core.recipe import plan_data
    from sava_core.registry import get_registries

    torch.set_num_threads(1)
    registries = get_registries()
    recipe = plan_data({"name": "bench", "data": DATA, "model": ENCODERS, "align": {"width": 64}}).cells[0].recipe
    dataset = registries["dataset"].build(recipe.data.name, recipe.data.params)
    build = lambda kind: registries[kind].build(getattr(recipe.model, kind).name, getattr(recipe.model, kind).params)  # noqa: E731
    venc, aenc = build("video_encoder").eval(), build("audio_encoder").eval()
    clips = dataset.media("train")
    video = torch.stack([clips[i].video for i in range(len(clips))])
    audio = torch.stack([clips[i].audio for i in range(len(clips))])

    with torch.no_grad():
        xv0, xa0 = venc.encode(video[:2]), aenc.encode(audio[:2])
    torch.manual_seed(0)
    model = AlignModel(recipe, registries, xv0.shape[-1], xa0.shape[-1])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    alpha, lam = recipe.align.loss.alpha, recipe.align.loss.lam
    objective = AlignObjective(model, alpha, lam)

    def step(xv: torch.Tensor, xa: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        objective(xv, align_time(xa, xv.shape[1]))["loss"].backward()
        opt.step()

    def reencode_epoch() -> None:
        for s in range(0, len(video), batch_size):
            with torch.no_grad():
                xv, xa = venc.encode(video[s : s + batch_size]), aenc.encode(audio[s : s + batch_size])
            step(xv, xa)

    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        encode_split(dataset, "train", venc, aenc, cache_root=root, batch_size=batch_size)
        build_seconds = time.perf_counter() - t0

        def cached_epoch() -> None:
            split = encode_split(dataset, "train", venc, aenc, cache_root=root)
            for s in range(0, len(split), batch_size):
                step(split.video[s : s + batch_size], split.audio[s : s + batch_size])

        reencode_epoch(), cached_epoch()  # warm-up
        times: dict[str, list[float]] = {"reencode": [], "cached": []}
        for _ in range(3):  # interleaved, so that machine noise hits both alike
            for name, fn in (("reencode", reencode_epoch), ("cached", cached_epoch)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    reencode, cached = min(times["reencode"]), min(times["cached"])
    result = {
        "clips": len(video), "batch_size": batch_size, "video": list(video.shape[1:]), "audio": list(audio.shape[1:]),
        "encoders": ENCODERS, "seconds_epoch_reencode": reencode, "seconds_epoch_cached": cached,
        "seconds_cache_build": build_seconds, "speedup": reencode / cached, "goal_speedup": 10.0,
        "all_times": times, "machine": machine(),
    }
    atomic_write_json(out_dir / "latent_cache.json", result)
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(main(REPO / "benchmarks" / "results"), indent=2))
