"""The benchmark protocols ``sava eval --protocol NAME`` runs (kind ``eval_protocol``): av-benchmark's
(MMAudio's tables on VGGSound) and JavisBench's column sets, each metric with the settings that
benchmark pins. Torch-free. What each column follows, and what differs: docs/metrics.md
("Benchmark protocols").
"""

from __future__ import annotations

from typing import Any, ClassVar

from sava_core.eval_protocol import Column, EvalProtocol

AV_BENCHMARK_SECONDS = 8.0
JAVISBENCH_SECONDS = 4.0


class AVBenchmark(EvalProtocol):
    """av-benchmark's ``evaluate.py`` columns for audio generated for video (or audio-video pairs)."""

    summary = "av-benchmark (MMAudio's VGGSound tables): FD-VGG/PANN/PaSST, KL, ISc, IB-score, DeSync, CLAP"
    source = ("github.com/hkchengrex/av-benchmark @ 050a5cd: av_bench/evaluate.py, extract.py, extract_video.py, "
              "av_bench/data/*.py")
    settings: ClassVar[dict[str, Any]] = {
        "audio_seconds": AV_BENCHMARK_SECONDS,
        "sample_rate": {"vggish": 16000, "panns_cnn14": 16000, "passt": 32000, "imagebind": 16000,
                        "synchformer": 16000, "clap": 48000},
        "isc": {"splits": 10, "shuffle_seed": 2020},
        "kl": "softmax of the classifier logits, reference || generated, clips paired by id",
        "ib_video": {"fps": 0.5, "size": 224, "crops": 3},
        "synchformer_video": {"fps": 25, "size": 224, "segment_frames": 16, "segment_step": 8,
                              "windows": "first and last 14 segments (4.8 s)"},
        "reference_statistics": "av-benchmark caches per-clip features (gt_cache/*.pth); sava: --save-stats DIR",
    }
    weights: ClassVar[dict[str, str]] = {
        "vggish": "vggish-10086976.pth",
        "panns": "Cnn14_16k_mAP=0.438.safetensors",
        "passt": "passt-s-f128-p16-s10-ap.476-swa.pt",
        "imagebind": "imagebind_huge.pth",
        "synchformer": "synchformer_state_dict.pth",
        "clap": "larger_clap_music_and_speech",
    }
    _audio = f"extractor_params.clip_seconds={AV_BENCHMARK_SECONDS:g}"
    columns = (
        Column("FD-VGG", f"fad extractor_params.checkpoint={{vggish}} {_audio}"),
        Column("FD-PANN", f"fd extractor=panns_cnn14 extractor_params.checkpoint={{panns}} {_audio}"),
        Column("FD-PASST", f"fd extractor=passt extractor_params.checkpoint={{passt}} {_audio}"),
        Column("KL-PANNS", f"kl extractor=panns_cnn14 extractor_params.checkpoint={{panns}} {_audio}"),
        Column("KL-PASST", f"kl extractor=passt extractor_params.checkpoint={{passt}} {_audio}"),
        Column("ISC-PANNS", f"isc extractor=panns_cnn14 seed=2020 extractor_params.checkpoint={{panns}} {_audio}"),
        Column("ISC-PASST", f"isc extractor=passt seed=2020 extractor_params.checkpoint={{passt}} {_audio}"),
        Column("IB-Score",
               f"ib_score duration_seconds={AV_BENCHMARK_SECONDS:g} extractor_params.checkpoint={{imagebind}}"),
        Column("DeSync",
               f"desync duration_seconds={AV_BENCHMARK_SECONDS:g} extractor_params.checkpoint={{synchformer}}"),
        Column("LAION-CLAP", "clap_score extractor_params.checkpoint={clap}"),
    )
    not_in_sava: ClassVar[dict[str, str]] = {
        "MS-CLAP": "Microsoft CLAP (msclap) is not wrapped in sava",
    }


class JavisBench(EvalProtocol):
    """JavisBench's columns (JavisDiT's ``eval/javisbench``) at its README's 4 s, 16-frame, 224 px setting."""

    summary = "JavisBench (JavisDiT): FVD (16 frames, 224), CLAP, CAVP, AVHScore, AV-Align at 4 s"
    source = ("github.com/JavisDiT/JavisDiT @ 6af1a7a: eval/javisbench/main.py, src/metrics.py, src/dataset.py, "
              "src/utils.py, src/av_align.py, src/fvd/fvd.py; the README's command (MAX_FRAMES=16, IMAGE_SIZE=224, "
              "MAX_AUDIO_LEN_S=4.0)")
    settings: ClassVar[dict[str, Any]] = {
        "audio_seconds": JAVISBENCH_SECONDS,
        "fvd": {"frames": 16, "frame_times": "linspace over the clip", "size": 224,
                "resize": "letterbox (ResizeAndPad)", "i3d_input_range": "[0, 1] (JavisBench's uint8 round trip)"},
        "sample_rate": {"clap": 48000, "cavp": 16000, "imagebind": 16000, "av_align": "the file's own"},
        "cavp_fps": 4,
        "reference_statistics": "JavisBench ships I3D and AudioCLIP embeddings of its real clips "
                                "(cache/fvd_fad/*.pt); sava: --save-stats DIR from reference clips",
    }
    weights: ClassVar[dict[str, str]] = {
        "i3d": "i3d_pretrained_400.pt",
        "clap": "clap-htsat-unfused",
        "cavp": "cavp_epoch66.safetensors",
        "imagebind": "imagebind_huge.pth",
    }
    columns = (
        Column("fvd", "fvd extractor_params.checkpoint={i3d} extractor_params.frames=16 extractor_params.size=224 "
                      "extractor_params.preprocessing=javisbench"),
        Column("clap_score", "clap_score extractor_params.checkpoint={clap}"),
        Column("cavp_score", "cavp_sim extractor_params.checkpoint={cavp}"),
        Column("avh_score", "avhscore extractor_params.checkpoint={imagebind}"),
        Column("av_align", "av_align implementation=javisbench"),
    )
    not_in_sava: ClassVar[dict[str, str]] = {
        "fad": "FAD on AudioCLIP embeddings (x 10000); AudioCLIP is not wrapped in sava",
        "kvd": "KVD (polynomial-kernel MMD of I3D logits) is not implemented",
        "ib_tv, ib_ta, ib_av": "ImageBind text tower and JavisBench's own ImageBind video loader are not in sava",
        "clip_score": "CLIP text-video score is not a sava metric",
        "javis_score": "JavisScore (windowed ImageBind top-k) is not implemented",
        "desync": "JavisDiT++ reports DeSync on JavisBench; its protocol for 4 s clips is not in the JavisBench "
                  "code at 6af1a7a (use --protocol av-benchmark's DeSync, 4.8 s windows, on longer clips)",
    }
