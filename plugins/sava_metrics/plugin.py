"""Registers the evaluation extractors and metrics. Loaded through the ``sava.plugins`` entry point ``metrics``.

Registration is lazy: nothing here imports torch (parameter models live in ``sava_metrics.params``).
"""

from sava_core.plugin import hookimpl

_EXTRACTORS = (
    ("vggish", "vggish:VGGish", "VGGishParams", "VGGish 128-d embeddings of 0.96 s windows (FAD)"),
    ("panns_cnn14", "panns:PANNsCnn14", "PANNsParams",
     "PANNs Cnn14 16 kHz: 2048-d embedding + 527 AudioSet logits (FD, KL, ISc)"),
    ("clap", "clap:CLAP", "CLAPParams", "LAION CLAP audio or text embeddings via transformers (FAD-CLAP, CLAP score)"),
    ("i3d", "i3d:I3D", "I3DParams", "Inception-I3D Kinetics-400 logits of 16 frames (FVD)"),
    ("imagebind", "imagebind:ImageBind", "ImageBindParams", "ImageBind-Huge vision/audio (AVHScore); CC-BY-NC 4.0"),
    ("cavp", "cavp:CAVP", "CAVPParams", "Diff-Foley CAVP video/audio embeddings, 4 steps/s (CAVP similarity)"),
    ("passt", "passt:PaSST", "PaSSTParams", "PaSST-S 32 kHz 10 s: 768-d + 527 AudioSet logits (sava[passt])"),
)

_METRICS = (
    ("fvd", "FVD", "FVDParams", "Frechet video distance on I3D logits"),
    ("fad", "FAD", "FADParams", "Frechet audio distance (VGGish by default; optionally FAD-infinity)"),
    ("fd", "FD", "FDParams", "Frechet distance on PANNs Cnn14 embeddings"),
    ("kl", "KL", "KLParams", "KL(reference || generated) of PANNs AudioSet predictions, paired clips"),
    ("isc", "ISC", "ISCParams", "Inception Score of PANNs AudioSet predictions"),
    ("clap_score", "CLAPScore", "CLAPScoreParams", "cosine of CLAP audio and caption embeddings"),
    ("avhscore", "AVHScore", "AVHScoreParams", "JavisBench audio-video harmony: ImageBind frames vs audio"),
    ("cavp_sim", "CAVPSim", "CAVPSimParams", "per-step cosine of CAVP video and audio embeddings"),
)

_PROTOCOLS = (
    ("av-benchmark", "AVBenchmark",
     "av-benchmark (MMAudio's tables): FD-VGG/PANN/PaSST, KL, ISc, IB-score, DeSync, CLAP score"),
    ("javisbench", "JavisBench", "JavisBench at 4 s: FVD (16 frames, 224 px), CLAP, CAVP, AVHScore, AV-Align"),
)


@hookimpl
def sava_register(registry) -> None:  # type: ignore[no-untyped-def]
    for name, target, params, summary in _EXTRACTORS:
        registry.register("extractor", name, f"sava_metrics.{target}", params=f"sava_metrics.params:{params}",
                          summary=summary)
    for name, cls, params, summary in _METRICS:
        registry.register("metric", name, f"sava_metrics.metrics:{cls}", params=f"sava_metrics.params:{params}",
                          summary=summary)
    registry.register("metric", "av_align", "sava_metrics.avalign:AVAlign", params="sava_metrics.params:AVAlignParams",
                      summary="AV-Align: IoU of audio onsets and optical-flow peaks (OpenCV, librosa), no weights")
    registry.register("metric", "ib_score", "sava_metrics.ib_score:IBScore", params="sava_metrics.params:IBScoreParams",
                      summary="av-benchmark IB-score: cosine of ImageBind video (0.5 fps, 3 crops) and audio")
    for name, cls, summary in _PROTOCOLS:
        registry.register("eval_protocol", name, f"sava_metrics.protocols:{cls}", summary=summary)
    registry.register("extractor", "synchformer", "sava_metrics.desync:SynchformerExtractor",
                      params="sava_metrics.params:SynchformerParams",
                      summary="Synchformer (av-benchmark): audio-video offset logits of two 4.8 s windows (DeSync)")
    registry.register("metric", "desync", "sava_metrics.desync:DeSync", params="sava_metrics.params:DeSyncParams",
                      summary="av-benchmark DeSync: mean |Synchformer offset| (s) of the first and last 4.8 s")
