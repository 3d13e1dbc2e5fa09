"""Benchmark: peak memory and time of ``evaluate`` (``sava eval``) on 1080p clips and on many small ones,
streamed (clips decoded as each extractor asks) against the whole-clip path it replaced.

Data, written once into a temporary folder: two copies of a synthetic 10 s 1080p clip at 25 fps
(H.264 + 48 kHz stereo AAC, the shape of VGGSound's clips; written frame by frame with PyAV, since
``write_mp4`` takes the whole clip as one float tensor), the same clip cut to 2 s, and 1,000 small
clips (64x64, 16 frames at 8 fps, 16 kHz) with 100 reference clips. Metrics: ``fvd
extractor_params.preset=tiny`` (I3D, 16 frames resized to 224x224) and ``fad
extractor_params.preset=tiny`` (VGGish), each against a reference folder.

Each case runs in a fresh interpreter (so ``ru_maxrss``, the process's peak resident set, is its
own): ``streamed`` is ``evaluate`` as shipped; ``whole_clip`` is the path it replaced, in the same
run: every clip read whole by ``sava_core.media_io.read_mp4`` (every frame at the source size as
float32) and prepared from memory. That path on the 10 s 1080p clips needs about 22 GB (see
:func:`whole_clip_bytes`), so it runs only with ``--full-baseline`` or where twice that is free;
otherwise its figure is the estimate, checked against the measured 2 s case. The load average is
recorded around every case: other work on the machine slows the timings. Writes ``eval_memory.json``.

    python benchmarks/eval_memory.py [--full-baseline]    # -> benchmarks/results/eval_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine  # noqa: E402

from sava_core.io import atomic_write_json  # noqa: E402

METRICS = ["fvd extractor_params.preset=tiny", "fad extractor_params.preset=tiny"]
WIDTH, HEIGHT, FPS, SECONDS, RATE = 1920, 1080, 25, 10.0, 48000
BATCH, FRAMES, SIZE = 8, 16, 224  # the metrics' defaults: batch_size, I3D frames and size
MB = 2**20


def write_big_clip(path: Path, seconds: float) -> None:
    """A moving gradient with noise, ``seconds`` at 25 fps, 1920x1080, and a chirp in 48 kHz stereo."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    frames = round(seconds * FPS)
    x = np.linspace(0, 255, WIDTH, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, HEIGHT, dtype=np.float32)[:, None, None]
    with av.open(str(path), "w", format="mp4") as container:
        video: Any = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.options = {"crf": "23", "preset": "veryfast"}
        audio: Any = container.add_stream("aac", rate=RATE)
        audio.layout = "stereo"
        for k in range(frames):
            base = (x + 3 * k + y * np.array([0.2, 0.5, 0.8], np.float32)) % 256
            noise = rng.integers(0, 24, (HEIGHT // 8, WIDTH // 8, 1), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
            rgb = np.clip(base + noise, 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = k
            container.mux(video.encode(frame))
        container.mux(video.encode())
        t = np.arange(round(seconds * RATE)) / RATE
        tone = (0.3 * np.sin(2 * np.pi * (200 + 40 * t) * t)).astype(np.float32)
        sound = av.AudioFrame.from_ndarray(np.stack([tone, tone[::-1].copy()]), format="fltp", layout="stereo")
        sound.sample_rate, sound.pts = RATE, 0
        container.mux(audio.encode(sound))
        container.mux(audio.encode())


def write_small_clips(folder: Path, n: int, seed: int) -> None:
    import torch

    from sava_core.media_io import write_mp4

    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        video = torch.rand(16, 3, 64, 64, generator=g)
        audio = 0.3 * (torch.rand(1, 32000, generator=g) * 2 - 1)
        write_mp4(folder / f"clip-{i:05d}.mp4", video, 8.0, audio, 16000)


def prepare(root: Path, n_small: int) -> dict[str, Any]:
    """Write the data sets; returns what was written and how long it took."""
    start = time.perf_counter()
    for name, seconds in (("big10", SECONDS), ("big2", 2.0)):
        (root / name).mkdir()
        write_big_clip(root / name / "a.mp4", seconds)
        os.link(root / name / "a.mp4", root / name / "b.mp4")  # a Frechet distance needs two clips
    for name, n, seed in (("small", n_small, 0), ("small_ref", max(2, n_small // 10), 1)):
        (root / name).mkdir()
        write_small_clips(root / name, n, seed)
    return {
        "clip_1080p": {"width": WIDTH, "height": HEIGHT, "fps": FPS, "seconds": SECONDS,
                       "frames": round(SECONDS * FPS), "audio": f"{RATE} Hz stereo AAC", "video": "H.264 yuv420p",
                       "bytes": (root / "big10" / "a.mp4").stat().st_size, "copies": 2},
        "small_clips": {"n": n_small, "reference_n": max(2, n_small // 10), "width": 64, "height": 64,
                        "frames": 16, "fps": 8.0, "sample_rate": 16000},
        "seconds_to_write": time.perf_counter() - start,
    }


# ------------------------------------------------------------------------------------------ one case, in a child


def _meminfo(field: str) -> int:
    """A field of /proc/meminfo in bytes (Linux)."""
    with open("/proc/meminfo") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(field + ":"))


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_case(mode: str, generated: str, reference: str) -> dict[str, Any]:
    """``evaluate`` once in this process (``mode``: streamed or whole_clip); its peak RSS and time."""
    import torch  # noqa: F401  (imported before the start figure, as evaluate would)

    from sava_core.clips import ClipSet, MediaItem
    from sava_core.evaluation import evaluate
    from sava_core.registry import get_registries

    if mode == "whole_clip":
        from sava_core.media_io import read_mp4

        def read(self: ClipSet, index: int, request: Any = None) -> MediaItem:
            entry = self.entries[index]
            video, audio, fps, rate = read_mp4(entry.path)  # what every clip read did before streaming
            return MediaItem(entry.id, video, fps, audio, rate, entry.caption, str(entry.path))

        ClipSet.read = read  # type: ignore[method-assign]
    registries = get_registries()
    for m in ("fvd", "fad"):  # build the extractors' classes once, outside the timed call
        registries["metric"].build(m, {"extractor_params": {"preset": "tiny"}}, registries=registries)
    start_rss = _rss()
    start = time.perf_counter()
    result = evaluate(generated, METRICS, reference=reference, registries=registries)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "mode": mode, "seconds": seconds, "peak_rss_mb": peak / MB, "start_rss_mb": start_rss / MB,
        "peak_over_start_mb": (peak - start_rss) / MB,
        "n_generated": {s["label"]: s["protocol"]["n_generated"] for s in result.scores},
        "values": {s["label"]: s["values"][s["metric"]] for s in result.scores},
        "skipped": len(result.skipped),
    }


def child(mode: str, generated: Path, reference: Path) -> dict[str, Any]:
    """:func:`run_case` in a fresh interpreter."""
    before = list(os.getloadavg())
    out = subprocess.run([sys.executable, __file__, "--case", mode, str(generated), str(reference)],
                         capture_output=True, text=True, check=False)
    load = {"load_average_1_5_15_before": before, "load_average_1_5_15_after": list(os.getloadavg())}
    if out.returncode != 0:
        return {"mode": mode, "failed": f"exit {out.returncode}: {out.stderr.strip().splitlines()[-1:]}", **load}
    return {**json.loads(out.stdout.strip().splitlines()[-1]), **load}


def whole_clip_bytes(frames: int, height: int, width: int) -> int:
    """Peak bytes of the whole-clip path per clip read: ``read_mp4``'s uint8 frames as a list and
    stacked (2 x 3FHW), then ``.float()`` and ``/ 255`` (2 x 12FHW) alive together, while the
    previous clip's float32 frames (12FHW) are still referenced by the loop that read it."""
    return frames * height * width * 3 * (1 + 1 + 4 + 4 + 4)


def streamed_bound_bytes(height: int, width: int, seconds: float, rate: int, channels: int) -> dict[str, int]:
    """docs/metrics.md's bound on the clip data of one pass, beyond the extractor's weights and
    activations: FVD (I3D) holds a batch of prepared inputs, one source frame as uint8 and float32
    and the kept, resized frames of the clip being decoded and of the previous one; FAD (VGGish) a
    batch of 16 kHz mono clips and the decoded audio (float32) of two clips."""
    kept = FRAMES * 3 * SIZE * SIZE * 4
    audio = round(seconds * rate) * channels * 4
    return {"fvd": BATCH * kept + height * width * 3 * (1 + 4) + 2 * kept,
            "fad": BATCH * round(seconds * 16000) * 4 + 2 * audio}


def main(out_dir: Path, *, n_small: int = 1000, full_baseline: bool | None = None, repeats: int = 2) -> dict[str, Any]:
    """Write the data, run every case (the small-clip ones ``repeats`` times, alternating), write
    ``out_dir / "eval_memory.json"`` and return its figures."""
    estimate_10s = whole_clip_bytes(round(SECONDS * FPS), HEIGHT, WIDTH)
    available = _meminfo("MemAvailable")
    if full_baseline is None:
        full_baseline = available > 2 * estimate_10s
    with tempfile.TemporaryDirectory(prefix="sava-eval-memory-") as tmp:
        root = Path(tmp)
        data = prepare(root, n_small)
        cases = {
            "streamed_1080p_10s": child("streamed", root / "big10", root / "big10"),
            "streamed_1080p_2s": child("streamed", root / "big2", root / "big2"),
            "whole_clip_1080p_2s": child("whole_clip", root / "big2", root / "big2"),
        }
        small = {mode: [] for mode in ("streamed", "whole_clip")}
        for _ in range(repeats):  # alternating, so that other work on the machine slows both alike
            for mode, runs in small.items():
                runs.append(child(mode, root / "small", root / "small_ref"))
        for mode, runs in small.items():
            cases[f"{mode}_small_{n_small}"] = _summary(runs)
        if full_baseline:
            cases["whole_clip_1080p_10s"] = child("whole_clip", root / "big10", root / "big10")
    two_s = cases["whole_clip_1080p_2s"].get("peak_over_start_mb")
    result: dict[str, Any] = {
        "metrics": METRICS,
        "repeats_small": repeats,
        "data": data,
        "cases": cases,
        "whole_clip_1080p_10s": {
            "measured": full_baseline,
            "estimate_mb_per_clip_read": estimate_10s / MB,
            "estimate_2s_mb": whole_clip_bytes(round(2 * FPS), HEIGHT, WIDTH) / MB,
            "measured_2s_peak_over_start_mb": two_s,
            "memory_available_mb": available / MB,
            "why_not_measured": None if full_baseline else "needs more memory than this machine has free "
                                                            "(run with --full-baseline to measure it anyway)",
        },
        "streamed_clip_data_bound_mb_1080p_10s": {
            **{k: v / MB for k, v in streamed_bound_bytes(HEIGHT, WIDTH, SECONDS, RATE, 2).items()},
            "formula": "fvd: (batch_size + 2) x frames x 3 x size^2 x 4 B + 3HW x 5 B; fad: batch_size x 16 kHz "
                       "samples x 4 B + 2 x C x S x 4 B; beyond the extractor's weights and one batch's activations",
        },
        "peak_ratio_whole_over_streamed_1080p_2s": _ratio(cases["whole_clip_1080p_2s"], cases["streamed_1080p_2s"],
                                                          "peak_over_start_mb"),
        f"time_ratio_whole_over_streamed_small_{n_small}": _ratio(cases[f"whole_clip_small_{n_small}"],
                                                                  cases[f"streamed_small_{n_small}"], "seconds"),
        "same_scores": {k: cases[f"whole_clip_{k}"].get("values") == cases[f"streamed_{k}"].get("values")
                        for k in ("1080p_2s", f"small_{n_small}")},
        "machine": {**machine(), "memory_total_mb": _meminfo("MemTotal") / MB,
                    "load_average_1_5_15": list(os.getloadavg())},
    }
    atomic_write_json(Path(out_dir) / "eval_memory.json", result)
    return result


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Repeated runs of one case: the fastest time, the largest peak, and every run."""
    ok = [r for r in runs if "failed" not in r]
    if not ok:
        return {"failed": [r["failed"] for r in runs], "runs": runs}
    return {**ok[0], "seconds": min(r["seconds"] for r in ok), "seconds_each": [r["seconds"] for r in ok],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in ok),
            "peak_over_start_mb": max(r["peak_over_start_mb"] for r in ok),
            "load_average_1_5_15_each": [r["load_average_1_5_15_before"] for r in ok]}


def _ratio(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
    return a[key] / b[key] if key in a and key in b and b[key] else None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", nargs=3, metavar=("MODE", "GENERATED", "REFERENCE"), help=argparse.SUPPRESS)
    parser.add_argument("--small", type=int, default=1000, help="number of small clips")
    parser.add_argument("--full-baseline", action="store_true", default=None,
                        help="run the whole-clip path on the 10 s 1080p clips even where memory looks short")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(*args.case)))
    else:
        figures = main(args.out, n_small=args.small, full_baseline=args.full_baseline)
        print(json.dumps({k: v for k, v in figures.items() if k != "machine"}, indent=2))
