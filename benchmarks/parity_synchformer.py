"""Parity: sava's Synchformer port and DeSync preprocessing against av-benchmark's own code.

Needs the av-benchmark mirror (a bare git repository) and, for the reference only, einops, omegaconf and timm
(``pip install einops omegaconf timm``; sava itself uses none of them). The reference's files are taken from
the mirror with ``git archive`` into a temporary folder; two names that transformers 5 dropped and its
modified AST still calls (``find_pruneable_heads_and_indices``, ``PreTrainedModel.get_head_mask``) are
patched in, unused by its forward pass.

1. Weights: the reference ``Synchformer()`` is built and every tensor re-drawn under a seed (normal with
   std 1 / sqrt(fan-in) for matrices and kernels, 1 + 0.1 N for 1-d weights, 0.1 N for biases: the
   upstream initialisation zeroes some layers, which would leave paths untested); the state dict is saved to
   a file and loaded by sava's ``synchformer`` extractor (``preset: published``, ``sha256`` checked, every
   key and shape required). The key -> shape list is written to ``plugins/sava_metrics/configs/
   synchformer_keys.json``.
2. Raw tensors: one window of 14 video segments (1, 14, 16, 3, 224, 224) in [-1, 1] and audio log-mels
   (2, 14, 1, 128, 66) through ``extract_vfeats`` / ``extract_afeats`` / ``compare_v_a`` of both, and the
   sync head on 64 windows of random features.
3. A generated clip: 8 s, 25 fps, 180 x 320, 44.1 kHz audio, written as mp4. Reference input: the frames
   FFmpeg's ``fps=25`` filter gives (what torio applies), av-benchmark's ``VideoDataset.sync_transform``,
   ``encode_video_with_sync``; the decoded waveform through ``SynchformerAudioDataset`` and
   ``encode_audio_with_sync``; DeSync's windows as ``evaluate.py`` takes them. sava: ``sava eval``'s path
   (the clip reader with the extractor's request, ``SynchformerExtractor.features``).
4. Frame times for a 30 fps source: FFmpeg's ``fps=25`` filter against sava's clip reader, frame by frame.

    python benchmarks/parity_synchformer.py [--mirror DIR]   # -> benchmarks/results/parity_synchformer.json
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import math
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import av
import torch
import torchaudio

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine  # noqa: E402

from sava_core.clips import ClipRequest, ClipSet, read_clip  # noqa: E402
from sava_core.io import atomic_write_json  # noqa: E402
from sava_core.media_io import write_mp4  # noqa: E402
from sava_core.registry import get_registries  # noqa: E402
from sava_metrics.common import fit_length  # noqa: E402
from sava_metrics.desync import MEL_FRAMES, MEL_MEAN, MEL_STD, SynchformerExtractor  # noqa: E402
from sava_metrics.synchformer import offset_grid  # noqa: E402

MIRROR = Path("/work/.mirror/hkchengrex+av-benchmark/repo")
HERE = Path(__file__).resolve().parent
KEYS = HERE.parent / "plugins" / "sava_metrics" / "configs" / "synchformer_keys.json"
RATE = 44100


def reference(mirror: Path, into: Path) -> tuple[types.SimpleNamespace, str]:
    """av-benchmark's modules from ``mirror``'s HEAD, importable: (namespace of what is used, commit)."""
    commit = subprocess.run(["git", "-C", str(mirror), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(mirror), "archive", "HEAD", "av_bench", "extract_video.py"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "x", "-C", str(into)], input=archive, check=True)
    sys.path.insert(0, str(into))
    import transformers.pytorch_utils as pytorch_utils

    if not hasattr(pytorch_utils, "find_pruneable_heads_and_indices"):  # removed in transformers 5; head pruning only
        pytorch_utils.find_pruneable_heads_and_indices = None  # type: ignore[attr-defined]
    for name in ("torio", "torio.io", "pytorchvideo", "pytorchvideo.data", "pytorchvideo.data.clip_sampling"):
        sys.modules.setdefault(name, types.ModuleType(name))  # imported at the top of the datasets, unused here
    sys.modules["torio.io"].StreamingMediaDecoder = None  # type: ignore[attr-defined]
    sys.modules["pytorchvideo.data.clip_sampling"].ConstantClipsPerVideoSampler = None  # type: ignore[attr-defined]
    from av_bench.data import audio_dataset, video_dataset
    from av_bench.synchformer import synchformer
    from av_bench.synchformer.hf_src import modeling_ast

    if not hasattr(modeling_ast.ASTModel, "get_head_mask"):  # removed in transformers 5; no head mask is given
        modeling_ast.ASTModel.get_head_mask = lambda self, mask, layers: [None] * layers  # type: ignore[attr-defined]
    functions = {"encode_video_with_sync": into / "extract_video.py",
                 "encode_audio_with_sync": into / "av_bench" / "extract.py"}
    namespace: dict[str, Any] = {"torch": torch, "Synchformer": synchformer.Synchformer,
                                 "pad_or_truncate": audio_dataset.pad_or_truncate}
    import einops

    namespace.update(rearrange=einops.rearrange, torchaudio=torchaudio)
    for name, path in functions.items():  # the two functions alone: their modules import CLAP, ImageBind, ...
        tree = ast.parse(path.read_text())
        node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
        exec(compile(ast.Module([node], []), str(path), "exec"), namespace)  # noqa: S102 - the reference's code
    return types.SimpleNamespace(Synchformer=synchformer.Synchformer, make_class_grid=synchformer.make_class_grid,
                                 VideoDataset=video_dataset.VideoDataset,
                                 SynchformerAudioDataset=audio_dataset.SynchformerAudioDataset,
                                 audio_dataset=audio_dataset,
                                 encode_video_with_sync=namespace["encode_video_with_sync"],
                                 encode_audio_with_sync=namespace["encode_audio_with_sync"]), commit


def redraw(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Every tensor of ``state`` drawn again under ``seed`` (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, v in state.items():
        noise = torch.randn(v.shape, generator=g)
        if v.dim() >= 2:
            out[key] = noise / math.sqrt(max(1, v[0].numel()))
        else:
            out[key] = 1 + 0.1 * noise if key.endswith("weight") else 0.1 * noise
    return out


def diff(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Max |a - b| and max |a| (the scale it is relative to)."""
    return {"max_abs_diff": (a.double() - b.double()).abs().max().item(), "max_abs": a.abs().max().item()}


def ffmpeg_fps_frames(path: Path, fps: str) -> torch.Tensor:
    """Frames (T, 3, H, W) uint8 as FFmpeg's ``fps`` filter outputs them (torio's frame_rate=...)."""
    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        graph = av.filter.Graph()
        src, flt, sink = graph.add_buffer(template=stream), graph.add("fps", fps), graph.add("buffersink")
        src.link_to(flt)
        flt.link_to(sink)
        graph.configure()

        def drain() -> None:
            while True:
                try:
                    out.append(torch.from_numpy(graph.pull().to_ndarray(format="rgb24")).permute(2, 0, 1))
                except (av.BlockingIOError, av.EOFError):
                    return

        for frame in container.decode(stream):
            graph.push(frame)
            drain()
        graph.push(None)
        drain()
    return torch.stack(out)


def generated_clip(path: Path, seconds: float, fps: float, h: int, w: int) -> None:
    """A clip with moving content and audio bursts, written with sava's ``write_mp4``."""
    g = torch.Generator().manual_seed(7)
    n = round(seconds * fps)
    y, x = torch.meshgrid(torch.arange(h) / h, torch.arange(w) / w, indexing="ij")
    t = torch.arange(n)[:, None, None] / fps
    blob = torch.exp(-(((x - 0.5 - 0.3 * torch.sin(2 * t)) ** 2) + (y - 0.5) ** 2) / 0.01)
    video = torch.stack([blob, 0.5 * x.expand(n, h, w), (0.5 + 0.5 * torch.sin(6 * t)).expand(n, h, w)], 1)
    video = (video + 0.05 * torch.rand(video.shape, generator=g)).clamp(0, 1)
    s = torch.arange(round(seconds * RATE)) / RATE
    bursts = (torch.sin(2 * math.pi * 0.5 * s) > 0.7).float()
    audio = 0.4 * bursts * torch.sin(2 * math.pi * 440 * s) + 0.02 * torch.randn(s.shape, generator=g)
    write_mp4(path, video, fps, torch.stack([audio, 0.8 * audio]), RATE)


def main(out_dir: Path, mirror: Path = MIRROR, seed: int = 0) -> dict[str, Any]:
    """Run every comparison once; write ``parity_synchformer.json`` to ``out_dir`` and the key list."""
    result: dict[str, Any] = {"seed": seed}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "ref").mkdir()
        ref, commit = reference(mirror, tmp / "ref")
        result["reference"] = f"github.com/hkchengrex/av-benchmark @ {commit} (mirror {mirror})"

        # 1. weights and the key list
        torch.manual_seed(seed)
        ref_model = ref.Synchformer().eval()
        shapes = {k: list(v.shape) for k, v in ref_model.state_dict().items()}
        atomic_write_json(KEYS, {"source": f"av-benchmark @ {commit}: Synchformer().state_dict()",
                                 "tensors": len(shapes), "values": sum(math.prod(s) for s in shapes.values()),
                                 "shapes": shapes})
        state = redraw(ref_model.state_dict(), seed)
        ref_model.load_state_dict(state)
        ckpt = tmp / "synchformer_state_dict.pth"
        torch.save(state, ckpt)
        digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
        start = time.perf_counter()
        extractor = get_registries()["extractor"].build(
            "synchformer", {"checkpoint": str(ckpt), "sha256": digest}).eval()
        assert isinstance(extractor, SynchformerExtractor)
        result["weights"] = {"tensors": len(shapes), "values": sum(math.prod(s) for s in shapes.values()),
                             "loaded_with_every_key": True, "load_seconds": time.perf_counter() - start}
        ours = extractor.model

        # 2. raw tensors
        g = torch.Generator().manual_seed(seed + 1)
        video = torch.rand(1, 14, 16, 3, 224, 224, generator=g) * 2 - 1
        mel = torch.randn(2, 14, 1, 128, 66, generator=g)
        with torch.inference_mode():
            t0 = time.perf_counter()
            rv = ref_model.extract_vfeats(video)
            t1 = time.perf_counter()
            ov = ours.extract_vfeats(video)
            t2 = time.perf_counter()
            ra, oa = ref_model.extract_afeats(mel), ours.extract_afeats(mel)
            rl = ref_model.compare_v_a(rv.expand(2, -1, -1, -1), ra)
            ol = ours.compare_v_a(ov.expand(2, -1, -1, -1), oa)[1]
            head_v, head_a = torch.randn(64, 14, 8, 768, generator=g), torch.randn(64, 14, 6, 768, generator=g)
            rh, oh = ref_model.compare_v_a(head_v, head_a), ours.compare_v_a(head_v, head_a)[1]
        result["raw_tensors"] = {
            "video_features": {**diff(rv, ov), "shape": list(rv.shape), "seconds_reference": t1 - t0,
                               "seconds_sava": t2 - t1},
            "audio_features": {**diff(ra, oa), "shape": list(ra.shape)},
            "logits": {**diff(rl, ol), "argmax_agree": f"{(rl.argmax(-1) == ol.argmax(-1)).sum().item()}/2"},
            "head_on_random_features": {**diff(rh, oh),
                                        "argmax_agree": f"{(rh.argmax(-1) == oh.argmax(-1)).sum().item()}/64"},
        }

        # 3. a generated clip, from the file
        folder = tmp / "clips"
        folder.mkdir()
        path = folder / "clip.mp4"
        generated_clip(path, 8.0, 25.0, 180, 320)
        (item,) = ClipSet.from_path(folder).with_request(extractor.reads())
        frames, audio = extractor.prepare(item)
        chunk = ffmpeg_fps_frames(path, "25")
        dataset = ref.VideoDataset([], duration_sec=8.0)
        sync_video = dataset.sync_transform(chunk[:dataset.sync_expected_length])  # (200, 3, 224, 224)
        decoded = read_clip(path, "clip", request=ClipRequest(video=False, audio=True))
        ref.audio_dataset.torchaudio = types.SimpleNamespace(  # its torchaudio.load reads the decoded track
            load=lambda _: (decoded.audio.clone(), decoded.sample_rate), transforms=torchaudio.transforms)
        wav, _ = ref.SynchformerAudioDataset([path], duration=8.0).sample(0)
        mel_module = torchaudio.transforms.MelSpectrogram(
            sample_rate=16000, win_length=400, hop_length=160, n_fft=1024, n_mels=128)  # ExtractionModels'
        seen: dict[str, torch.Tensor] = {}
        capture = types.SimpleNamespace(extract_afeats=lambda x: seen.setdefault("mel", x))
        ref.encode_audio_with_sync(capture, wav[None], mel_module)
        ours_mel = extractor.mel(audio[None].unfold(1, 10240, 5120))
        ours_mel = (fit_length(torch.log(ours_mel + 1e-6), MEL_FRAMES) - MEL_MEAN) / (2 * MEL_STD)
        with torch.inference_mode():
            t0 = time.perf_counter()
            rvf = ref.encode_video_with_sync(ref_model, sync_video[None])
            raf = ref.encode_audio_with_sync(ref_model, wav[None], mel_module)
            t1 = time.perf_counter()
            grid = ref.make_class_grid(-2, 2, 21)
            ref_offsets, ref_logits = [], []
            for window in (slice(None, 14), slice(-14, None)):  # evaluate.py's two windows
                ref_logits.append(ref_model.compare_v_a(rvf[:, window], raf[:, window]))
                top = torch.argmax(ref_logits[-1], dim=-1)
                ref_offsets.append(grid[top[0]].item())
            kept: dict[str, torch.Tensor] = {}
            video_features, audio_features = extractor.video_features, extractor.audio_features
            extractor.video_features = lambda v: kept.setdefault("v", video_features(v))  # type: ignore[method-assign]
            extractor.audio_features = lambda a: kept.setdefault("a", audio_features(a))  # type: ignore[method-assign]
            t2 = time.perf_counter()
            (_, features), = extractor.features(ClipSet.from_path(folder), 1)
            t3 = time.perf_counter()
        assert features.logits is not None
        ours_offsets = offset_grid()[features.logits.argmax(-1)].tolist()
        result["generated_clip"] = {
            "clip": "8 s, 25 fps, 180 x 320, 44.1 kHz stereo AAC, H.264 (sava_core.media_io.write_mp4)",
            "video_input": {**diff(sync_video, (frames - 0.5) / 0.5), "shape": list(sync_video.shape)},
            "audio_16k": diff(wav, audio),
            "log_mel_input": {**diff(seen["mel"], ours_mel.unsqueeze(2)), "shape": list(seen["mel"].shape)},
            "video_features": {**diff(rvf, kept["v"]), "shape": list(rvf.shape)},
            "audio_features": {**diff(raf, kept["a"]), "shape": list(raf.shape)},
            "logits": diff(torch.cat(ref_logits), features.logits),
            "offsets_reference": ref_offsets, "offsets_sava": ours_offsets,
            "offsets_agree": ref_offsets == ours_offsets,
            "desync_reference": sum(abs(o) for o in ref_offsets) / 2,
            "desync_sava": sum(abs(o) for o in ours_offsets) / 2,
            "seconds_reference": t1 - t0, "seconds_sava": t3 - t2,
        }

        # 4. frame times for a 30 fps source
        coded = folder / "coded_30fps.mp4"
        n = 300
        grey = (torch.arange(n) % 64 * 4 / 255.0)[:, None, None, None].expand(n, 3, 16, 16)
        write_mp4(coded, grey.contiguous(), 30.0, torch.zeros(1, RATE), RATE)
        filtered = [round(f.float().mean().item() / 4) % 64 for f in ffmpeg_fps_frames(coded, "25")[:200]]
        sava_frames = read_clip(coded, "c", request=ClipRequest(video=True, audio=False, fps=25.0, frames=200)).video
        read = [round(f.mean().item() * 255 / 4) % 64 for f in sava_frames]
        differing = [k for k, (a, b) in enumerate(zip(filtered, read)) if a != b]
        result["frame_times_30fps"] = {
            "frames_compared": len(read), "frames_differing": len(differing),
            "max_source_frame_gap": max((abs((a - b + 32) % 64 - 32) for a, b in zip(filtered, read)), default=0),
            "note": "FFmpeg's fps=25 filter (av-benchmark via torio) picks the nearest source frame, sava's reader "
                    "the nearest earlier one",
        }
    result["machine"] = machine()
    atomic_write_json(Path(out_dir) / "parity_synchformer.json", result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mirror", type=Path, default=MIRROR, help="av-benchmark's git repository (bare is fine)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    figures = main(args.out, args.mirror)
    print(json.dumps({k: v for k, v in figures.items() if k != "machine"}, indent=2))
