"""`sava eval` on real-sized media: a folder with a broken file and a 10 s 1080p clip finishes, lists the
broken file and stays under 2 GB (peak resident memory of the `sava eval` process), with metrics
that read 16 frames (FVD), every frame (IB-score's ImageBind video) and the audio (FAD)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from conftest import REPO

WIDTH, HEIGHT, FPS, SECONDS, RATE = 1920, 1080, 25, 10.0, 48000
LIMIT_KIB = 2 * 1024 * 1024


def write_1080p(path) -> None:  # type: ignore[no-untyped-def]
    """10 s of a moving gradient at 25 fps, 1920x1080 H.264, with a 48 kHz stereo tone."""
    import av

    x = np.linspace(0, 255, WIDTH, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, HEIGHT, dtype=np.float32)[:, None, None]
    with av.open(str(path), "w", format="mp4") as container:
        video: Any = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.options = {"preset": "ultrafast"}
        audio: Any = container.add_stream("aac", rate=RATE)
        audio.layout = "stereo"
        for k in range(round(SECONDS * FPS)):
            rgb = ((x + 4 * k + y * np.array([0.2, 0.5, 0.8], np.float32)) % 256).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = k
            container.mux(video.encode(frame))
        container.mux(video.encode())
        t = np.arange(round(SECONDS * RATE)) / RATE
        tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        sound = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        sound.sample_rate, sound.pts = RATE, 0
        container.mux(audio.encode(sound))
        container.mux(audio.encode())


@pytest.mark.slow
def test_a_broken_file_and_a_10s_1080p_clip_finish_under_2_gb(tmp_path):
    gen = tmp_path / "gen"
    gen.mkdir()
    write_1080p(gen / "big.mp4")
    (gen / "big2.mp4").hardlink_to(gen / "big.mp4")  # a Frechet distance needs two clips
    (gen / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    out = tmp_path / "scores.json"
    command = [sys.executable, "-m", "sava_cli.main", "eval", str(gen), "--reference", str(gen), "--out", str(out),
               "--metric", "fvd extractor_params.preset=tiny",
               "--metric", "fad extractor_params.preset=tiny",
               "--metric", "ib_score extractor_params.preset=tiny duration_seconds=8"]
    # measured in a process of its own, so the peak is that of `sava eval` alone
    probe = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
             "print(done.stdout); print(done.stderr, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    code, peak_kib = map(int, result.stdout.split("\n", 1)[0].split())
    assert code == 0, result.stderr
    document = json.loads(out.read_text())
    assert document["skipped"] and all(s["path"].endswith("broken.mp4") for s in document["skipped"])
    assert "broken.mp4" in result.stdout  # listed under the table
    assert {s["label"] for s in document["scores"]} == {"fvd", "fad", "ib_score"}
    assert all(s["protocol"]["n_generated"] == 2 for s in document["scores"])
    assert peak_kib < LIMIT_KIB, f"peak resident memory {peak_kib / 1024:.0f} MiB"
