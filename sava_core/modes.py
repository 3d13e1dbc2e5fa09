"""The generation modes of Stage III (``generate.mode``), registered by the ``core`` plug-in. Each is
a composition of :class:`sava_core.pipeline.SavaPipeline`'s sampling steps (torch-free here):

* ``two_stream``: T2V and T2A independently from the same text (Table 1's "Two-Streams");
* ``cascade``: T2V, then P_theta on the f_v latent of the generated video, then TV2A (unidirectional);
* ``cascade_bidirectional``: as ``cascade``, then the video generated again by TA2V from the text and
  the masked aligned latent of the generated audio (the audio is the same as in ``cascade``);
* ``joint``: a model that generates both streams at once (``model.joint_generator``, e.g. LTX-2),
  the joint-generation baseline;
* ``v2a``: video-to-audio (Table 2): TV2A conditioned on P_theta of the test clips' *real* video and
  on their captions.

Generated clips are decoded and encoded again before P_theta and Stage I read them (as any clip is),
not read from the sampled grids, which can lie off the encoder's manifold (docs/generation.md).
All modes of one seed draw their noise from one generator in the order of their steps, so the same
prompt position gets the same T2V noise in every mode.
"""

from __future__ import annotations

from typing import Any

from sava_core.stage import GenerationMode


class TwoStream(GenerationMode):
    """T2V and T2A from the same text, independently."""

    def generate(self, pipeline: Any, prompts: list[str], seed: int, videos: Any = None) -> dict[str, Any]:
        run = pipeline.start(prompts, seed)
        video_grid = run.timed("t2v", run.t2v)
        audio_grid = run.timed("second", run.t2a)
        return run.finish(video_grid, audio_grid)


class Cascade(GenerationMode):
    """T2V -> P_theta -> TV2A."""

    finetuned = ("tv2a",)

    def generate(self, pipeline: Any, prompts: list[str], seed: int, videos: Any = None) -> dict[str, Any]:
        run = pipeline.start(prompts, seed)
        video_grid = run.timed("t2v", run.t2v)
        audio_grid, video = run.timed("tv2a", lambda: run.tv2a(video_grid))
        return run.finish(video_grid, audio_grid, video=video)


class CascadeBidirectional(GenerationMode):
    """T2V -> P_theta -> TV2A, then TA2V from the text and the generated audio's masked latent."""

    finetuned = ("tv2a", "ta2v")

    def generate(self, pipeline: Any, prompts: list[str], seed: int, videos: Any = None) -> dict[str, Any]:
        run = pipeline.start(prompts, seed)
        first_grid = run.timed("t2v", run.t2v)
        audio_grid, first = run.timed("tv2a", lambda: run.tv2a(first_grid))
        video_grid, audio = run.timed("ta2v", lambda: run.ta2v(first_grid, first, audio_grid))
        return run.finish(video_grid, audio_grid, audio=audio)


class Joint(GenerationMode):
    """Both streams from ``model.joint_generator``."""

    uses_joint_generator = True

    def generate(self, pipeline: Any, prompts: list[str], seed: int, videos: Any = None) -> dict[str, Any]:
        return pipeline.joint(prompts, seed)


class VideoToAudio(GenerationMode):
    """TV2A on the test clips' real videos and their captions."""

    finetuned = ("tv2a",)
    from_test_videos = True

    def generate(self, pipeline: Any, prompts: list[str], seed: int, videos: Any = None) -> dict[str, Any]:
        if videos is None:
            raise ValueError("the v2a mode needs the videos to make audio for")
        return pipeline.video_to_audio(videos, prompts, seed)
