"""Contracts of every component kind (the paper, section 3).

Each registered component subclasses one of these, declares ``Params`` (a pydantic model with
``extra="forbid"``) and is constructed as ``Component(params, **runtime)`` where ``runtime`` holds
sizes known only when the recipe runs (input widths, the aligned width d).

Shapes use B batch, T latent time steps, F video frames, S audio samples, N text tokens.
Latent sequences keep a time axis: (B, T, D). Videos are float in [0, 1], (B, F, 3, H, W);
audio is float in [-1, 1], (B, C, S) at the component's ``sample_rate`` (Hz).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import torch
from pydantic import BaseModel
from torch import Tensor, nn

if TYPE_CHECKING:
    from sava_core.clips import MediaItem
    from sava_core.protocol import ReferenceStats


class Component:
    """Mixin: the parsed parameters every component keeps as ``self.params``."""

    Params: ClassVar[type[BaseModel]]
    params: BaseModel


# ----------------------------------------------------------------------------------- encoders


class VideoEncoder(nn.Module, Component, ABC):
    """f_v, frozen: video (B, F, 3, H, W) in [0, 1] -> latent sequence (B, T, latent_dim)."""

    latent_dim: int
    frame_rate: float  # frames per second the encoder expects

    @abstractmethod
    def encode(self, video: Tensor) -> Tensor: ...

    def decode(self, latent: Tensor) -> Tensor:
        """Latent (B, T, latent_dim) -> video (B, F, 3, H, W); only VAE-style encoders decode."""
        raise NotImplementedError(f"{type(self).__name__} cannot decode")

    # A VAE-style encoder that a video backbone denoises in also provides its latent *grid* (the
    # layout the backbone denoises) and the map from grid to the time-first sequence Stage I aligns
    # (it may pool space, e.g. to a few cells per latent frame; the encoder documents it). The
    # generation stages (pretrain, finetune, generate) need these three.

    def encode_grid(self, video: Tensor) -> Tensor:
        """Video (B, F, 3, H, W) in [0, 1] -> latent grid (B, *grid_shape)."""
        raise NotImplementedError(f"{type(self).__name__} has no latent grid: it cannot serve a backbone")

    def decode_grid(self, grid: Tensor) -> Tensor:
        """Latent grid (B, *grid_shape) -> video (B, F, 3, H, W) in [0, 1] at ``frame_rate``."""
        raise NotImplementedError(f"{type(self).__name__} cannot decode")

    def grid_to_sequence(self, grid: Tensor) -> Tensor:
        """Latent grid (B, *grid_shape) -> sequence (B, T, latent_dim), time first."""
        raise NotImplementedError(f"{type(self).__name__} has no latent grid")


class AudioEncoder(nn.Module, Component, ABC):
    """f_a, frozen: audio (B, C, S) in [-1, 1] at ``sample_rate`` Hz -> latent (B, T, latent_dim)."""

    latent_dim: int
    sample_rate: int

    @abstractmethod
    def encode(self, audio: Tensor) -> Tensor: ...

    def decode(self, latent: Tensor) -> Tensor:
        """Latent (B, T, latent_dim) -> audio (B, C, S); only VAE-style encoders decode."""
        raise NotImplementedError(f"{type(self).__name__} cannot decode")

    # As for VideoEncoder: the latent grid an audio backbone denoises (e.g. a mel VAE's
    # (B, C, frames/r, mel_bins/r)) and the map to a time-first sequence.

    def encode_grid(self, audio: Tensor) -> Tensor:
        """Audio (B, C, S) in [-1, 1] at ``sample_rate`` -> latent grid (B, *grid_shape)."""
        raise NotImplementedError(f"{type(self).__name__} has no latent grid: it cannot serve a backbone")

    def decode_grid(self, grid: Tensor) -> Tensor:
        """Latent grid (B, *grid_shape) -> waveform (B, C, S) in [-1, 1] at ``sample_rate``."""
        raise NotImplementedError(f"{type(self).__name__} cannot decode")

    def grid_to_sequence(self, grid: Tensor) -> Tensor:
        """Latent grid (B, *grid_shape) -> sequence (B, T, latent_dim), time first."""
        raise NotImplementedError(f"{type(self).__name__} has no latent grid")


@dataclass
class TextEmbedding:
    """f_t output: ``tokens`` (B, N, D), ``mask`` (B, N) bool (True = real token), ``pooled`` (B, D_pooled)
    (D_pooled = D unless the encoder says otherwise, e.g. CLAP's projection width)."""

    tokens: Tensor
    mask: Tensor
    pooled: Tensor


class TextEncoder(nn.Module, Component, ABC):
    """f_t: prompts -> :class:`TextEmbedding` of width ``dim``.

    ``max_tokens``: the most tokens of a prompt the encoder reads (the rest is cut off), with
    :meth:`token_count`; None when it does not say (``sava generate`` then cannot warn)."""

    dim: int
    max_tokens: int | None = None

    @abstractmethod
    def encode(self, prompts: list[str]) -> TextEmbedding: ...

    def token_count(self, prompt: str) -> int | None:
        """Tokens ``prompt`` has before any cut (None: the encoder does not say)."""
        return None


# ----------------------------------------------------------------------------------- Stage I


class Adapter(nn.Module, Component, ABC):
    """q_V or q_A (Eq. 3): encoder latent (B, T, in_dim) -> aligned latent (B, T, out_dim = d).

    Runtime arguments: ``in_dim``, ``out_dim``.
    """

    @abstractmethod
    def forward(self, z: Tensor) -> Tensor: ...


class Mask(nn.Module, Component, ABC):
    """M_V or M_A (Eq. 4-5): (own (B, T, d), partner (B, T, d)) -> weights (B, T, d) in [0, 1].

    What Stage I and the audit read from a mask, besides calling it:

    * ``is_identity``: the mask is all ones whatever its input (Table 3's "no mask", direct
      alignment); Stage I then adds no sparsity term;
    * ``uses_partner``: the mask reads the partner latent (Table 3's joint mask); the audit's
      shuffled-partner control is meaningful only then;
    * ``hard``: the forward pass gives exactly 0 or 1;
    * ``threshold``: entries above it count as open in the audit's ``density``;
    * ``train()`` / ``eval()``: training-only behaviour (noise, dropout on the partner, sampled
      gates) must be off in eval mode, which is how the audit, P_theta's targets and Stage II call
      it: an eval-mode mask is a deterministic function of its inputs;
    * :meth:`regulariser`: the sparsity penalty Eq. 7 adds, times ``lam``, for each mask;
    * :meth:`auxiliary_loss`: a loss of the mask's own (e.g. a predictor it trains), added unweighted.

    The audit (:mod:`sava_core.audit`) reports ``density`` (the fraction of entries above
    ``threshold``), ``mask_mean`` (the mean weight) and ``support_jaccard`` from eval-mode weights,
    and the mask's own figures from :meth:`audit_values`.

    Runtime argument: ``dim`` (d).
    """

    is_identity: bool = False
    uses_partner: bool = True
    hard: bool = False
    threshold: float = 0.5

    @abstractmethod
    def forward(self, own: Tensor, partner: Tensor) -> Tensor: ...

    def regulariser(self, own: Tensor, partner: Tensor, weights: Tensor) -> Tensor:
        """Eq. 7's sparsity term of one call: a scalar >= 0 (Stage I adds ``lam`` times it, for M_V
        and M_A). ``own``, ``partner`` are the inputs of the forward call that returned ``weights``
        (B, T, d); a mask whose penalty is not a function of its weights (an L0 mask's expected
        number of open gates) recomputes what it needs from them. Default: the density, the L1
        norm of ``weights`` divided by d, mean over tokens (in [0, 1])."""
        return weights.abs().mean()

    def auxiliary_loss(self, own: Tensor, partner: Tensor) -> Tensor | None:
        """A loss that trains parts of the mask Eq. 7 does not reach (the ``predicted`` mask's partner
        predictor), added to Stage I's total unweighted; ``own``, ``partner`` as in :meth:`forward`.
        It should not move the adapters (detach its inputs), so that Eq. 7 keeps its meaning.
        Default: None (no such loss)."""
        return None

    def audit_values(self, own: Tensor, partner: Tensor) -> dict[str, float]:
        """Figures of this mask for the audit (eval mode, one split's latents (N, T, d) each), by
        name, e.g. an L0 mask's expected fraction of open gates; default: none."""
        return {}


class Decoder(nn.Module, Component, ABC):
    """g_A or g_V (Eq. 6): masked latent (B, T, d) -> the partner's target (B, T, out_dim).

    Runtime arguments: ``in_dim`` (d), ``out_dim`` (the partner encoder's latent width).
    """

    @abstractmethod
    def forward(self, z: Tensor) -> Tensor: ...


class Projector(nn.Module, Component, ABC):
    """P_theta (Stage III): video encoder latent alone (B, T, in_dim) -> audio-guiding latent (B, T, d).

    Trained to predict the masked aligned video latent that Stage I computes with both modalities.
    Runtime arguments: ``in_dim``, ``out_dim``.
    """

    @abstractmethod
    def forward(self, z: Tensor) -> Tensor: ...


# ----------------------------------------------------------------------------------- generation


@dataclass
class Condition:
    """What a backbone is conditioned on: text tokens (B, N, D), their mask (B, N) and optional
    extra condition tokens (B, M, D) (phi of an aligned latent, Stage II) with their mask."""

    text: Tensor
    text_mask: Tensor | None = None
    extra: Tensor | None = None
    extra_mask: Tensor | None = None  # (B, M) bool; False drops a row's extra tokens (guidance)


class Backbone(nn.Module, Component, ABC):
    """eps_theta: a latent diffusion denoiser, LoRA-adaptable on its conditioning layers.

    Built as ``Backbone(params, latent_shape=..., condition_dim=...)``: ``latent_shape`` is the grid
    of the recipe's encoder for this modality (``encode_grid(...).shape[1:]``), ``condition_dim`` the
    width of the text encoder that conditions it (the recipe's ``video_text_encoder`` /
    ``audio_text_encoder``, else ``text_encoder``). A pretrained backbone checks both against its
    checkpoint and says which setting to change when they disagree.

    ``forward(noisy (B, *latent_shape), timestep (B,), condition) -> prediction`` of the same shape,
    of kind ``prediction_type`` ("epsilon", "v_prediction" or "sample"). ``condition.extra`` tokens
    (Stage II's phi output) have width ``condition_dim``.
    ``lora_targets`` lists the module-name patterns (regular expressions) Stage II adapts: the
    conditioning layers only. ``condition_modules`` names submodules that exist only to read
    ``condition.extra`` (e.g. a zero-initialised input path for a per-frame condition): Stage II
    trains them in full beside LoRA and saves them with it. ``scheduler_config`` is the noise
    schedule the backbone was trained with (a diffusers scheduler config: betas,
    ``prediction_type``, spacing, zero-SNR rescaling...) or None to use the sampler's own; with the
    sampler's own, ``clip_sample`` r clips the predicted clean latent to [-r, r] at every sampling
    step (diffusers' ``clip_sample``), None leaves it alone.
    """

    prediction_type: str
    latent_shape: tuple[int, ...]
    condition_dim: int
    lora_targets: list[str]
    condition_modules: tuple[str, ...] = ()
    scheduler_config: dict[str, Any] | None = None
    clip_sample: float | None = None

    @abstractmethod
    def forward(self, noisy: Tensor, timestep: Tensor, condition: Condition) -> Tensor: ...


class JointGenerator(nn.Module, Component, ABC):
    """A model that generates video and audio together in one network (e.g. LTX-2): the "joint
    generation" baseline that SAVA's cascade is compared with (``generate.mode: joint``).

    ``fps`` and ``sample_rate`` describe its outputs."""

    fps: float
    sample_rate: int

    @abstractmethod
    def generate(self, prompts: list[str], generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Prompts -> (video (B, F, 3, H, W) in [0, 1] at ``fps``, audio (B, C, S) in [-1, 1] at ``sample_rate``)."""


class Sampler(Component, ABC):
    """The reverse process (App. C): scheduler, number of steps and classifier-free guidance, and
    the forward process that noises training latents under the same schedule."""

    @abstractmethod
    def train_scheduler(self, backbone: Backbone) -> Any:
        """The forward process of ``backbone``'s schedule: an object with ``add_noise(x0, noise, t)``,
        ``get_velocity(x0, noise, t)`` and ``config.num_train_timesteps`` (a diffusers scheduler)."""

    @abstractmethod
    def sample(
        self,
        backbone: Backbone,
        condition: Condition,
        uncond: Condition,
        batch_size: int,
        generator: torch.Generator,
        *,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Return denoised latents (B, *backbone.latent_shape), starting from ``noise`` (B,
        *backbone.latent_shape) unit Gaussian noise when given (a diffusers pipeline's ``latents=``),
        else from noise drawn from ``generator``."""


# ----------------------------------------------------------------------------------- evaluation and data


@dataclass
class Features:
    """What an extractor returns for a batch: ``embeddings`` (B, D) float (one row per sample; an
    extractor that embeds windows returns one row per window and says so in its protocol) and,
    for classifiers, ``logits`` (B, K)."""

    embeddings: Tensor
    logits: Tensor | None = None


class FeatureExtractor(nn.Module, Component, ABC):
    """A frozen evaluation network (I3D, VGGish, PANNs, CLAP, ImageBind, CAVP, ...): media -> :class:`Features`.

    ``modality`` is "video" (input (B, F, 3, H, W) in [0, 1] at ``fps``), "audio" (input (B, C, S)
    in [-1, 1] at ``sample_rate``) or "text" (a list of prompts). ``protocol()`` describes exactly
    how inputs are prepared (resampler, resize mode, clip length, frame count and stride) and which
    checkpoint (with its sha256) is loaded; it is stored with every score.
    """

    modality: Literal["video", "audio", "text"]

    @abstractmethod
    def extract(self, batch: Any) -> Features: ...

    @abstractmethod
    def protocol(self) -> dict[str, Any]: ...


@dataclass
class Score:
    """A metric's numbers with the protocol that produced them (extractor, hashes, rates, N...)."""

    values: dict[str, float]
    protocol: dict[str, Any] = field(default_factory=dict)


MetricInput = Literal["video", "audio", "caption"]


class Metric(Component, ABC):
    """Generated clips (+ a reference set) -> :class:`Score`.

    ``generated`` (and the reference clips) is a sequence of :class:`sava_core.clips.MediaItem`
    decoded one at a time on access (``sava eval``'s folder or manifest): each item has ``id``,
    ``video`` (F, 3, H, W) in [0, 1] at ``fps``, ``audio`` (C, S) in [-1, 1] at ``sample_rate`` Hz
    (``None`` where the file has none) and ``caption``. Iterate it (once per pass) rather than
    holding every clip.

    What the evaluation driver (:func:`sava_core.evaluation.evaluate`) reads, besides calling
    :meth:`compute` (class attributes, or instance attributes set in ``__init__`` when they depend on
    the parameters):

    * ``needs``: what every generated clip must have (a clip without it is skipped and listed with the
      reason, or, with ``strict``, an error naming the clip, before the metric sees it);
    * ``needs_reference``: the metric compares with a reference set; the driver then reduces the
      reference clips with :meth:`reference_stats` once (or loads statistics saved earlier) and
      passes the :class:`~sava_core.protocol.ReferenceStats` to :meth:`compute`; without it
      ``compute`` gets ``reference=None``;
    * ``paired``: generated clips are compared with the reference clip of the same id (e.g. KL);
      the driver checks that the reference statistics' ``ids`` hold every generated id.

    :meth:`compute` returns a :class:`Score`: ``values`` (name -> finite float) and the
    ``protocol`` (JSON-serialisable) that makes the numbers comparable; two scores are comparable
    when their protocols agree on everything but the per-set counts (``n_generated``,
    ``n_reference``, ...; :data:`sava_core.protocol.PER_SET_KEYS`).

    Runtime argument: ``registries`` (to build the feature extractors the metric names).
    """

    needs: frozenset[MetricInput] = frozenset()
    needs_reference: bool = False
    paired: bool = False

    def reference_stats(self, clips: Sequence[MediaItem]) -> ReferenceStats:
        """What this metric keeps of the reference clips (their protocol and N, and e.g. a Gaussian,
        per-clip rows (N, D) or logits with ids); called once per evaluation when
        ``needs_reference``. The driver can save it (``--save-stats``) and reuse it."""
        raise NotImplementedError(f"{type(self).__name__} does not compare with a reference set")

    @abstractmethod
    def compute(self, generated: Sequence[MediaItem], reference: ReferenceStats | None = None) -> Score: ...


@dataclass
class LatentSplit:
    """Frozen-encoder outputs of one split, ready for Stage I.

    ``video`` (N, T, Dv) and ``audio`` (N, T, Da): encoder latents of N clips on a common time axis.
    ``factors``: ground-truth factors by group (``shared``, ``video``, ``audio``), each (N, T, k),
    when the dataset knows them (synthetic worlds); empty for real data.
    """

    video: Tensor
    audio: Tensor
    factors: dict[str, Tensor] = field(default_factory=dict)
    captions: list[str] | None = None

    def __post_init__(self) -> None:
        if self.video.shape[:2] != self.audio.shape[:2]:
            raise ValueError(
                f"video latents {tuple(self.video.shape)} and audio latents {tuple(self.audio.shape)} "
                "must share (N, T)"
            )

    def __len__(self) -> int:
        return self.video.shape[0]


@dataclass
class Clip:
    """One decoded clip (or segment).

    ``video`` (F, 3, H, W) float in [0, 1] at ``fps`` frames per second; ``audio`` (C, S) float in
    [-1, 1] at ``sample_rate`` Hz; both start at the same instant. ``meta`` holds ground truth where
    the dataset knows it (event times in seconds, classes) and provenance (source path, start time).
    """

    video: Tensor
    audio: Tensor
    fps: float
    sample_rate: int
    caption: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Seconds of video (F / fps)."""
        return self.video.shape[0] / self.fps


class ClipSplit(Protocol):
    """A map-style dataset of :class:`Clip` (e.g. a ``torch.utils.data.Dataset`` with ``__len__``)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Clip: ...


class Dataset(Component, ABC):
    """Clips with captions, split into ``splits`` (train / val / test).

    A media dataset implements :meth:`media`; a dataset whose samples are already frozen-encoder
    outputs (a synthetic factor world, a latent cache) implements :meth:`latents`.
    """

    splits: tuple[str, ...] = ("train", "val", "test")

    def media(self, split: str) -> ClipSplit:
        """The split as a map-style dataset of :class:`Clip` (usable with DataLoader workers).

        Optional attributes of the returned split, read by the latent cache: ``spec`` (an object
        with the decoding's ``fps`` and ``sample_rate``; else the first clip's are used) and
        ``skipped`` (a list of :class:`sava_core.decode.Skip`: files left out, with the reason)."""
        raise NotImplementedError(f"{type(self).__name__} provides latents, not media")

    def latents(self, split: str) -> LatentSplit:
        """The split as encoder latents; media datasets are encoded by the recipe's encoders instead."""
        raise NotImplementedError(f"{type(self).__name__} provides media, not latents")

    def fingerprint(self, split: str) -> dict[str, Any] | None:
        """What the split's content depends on beyond the parameters (e.g. a manifest's hash and the
        decoding settings), for the latent cache's key; None: the parameters say it all."""
        return None

    @property
    def provides_latents(self) -> bool:
        return type(self).latents is not Dataset.latents

    @property
    def provides_media(self) -> bool:
        return type(self).media is not Dataset.media


class GroundTruthWorld(ABC):
    """A dataset that knows the factors behind its clips (a synthetic world), so that Stage III can
    sample prompts with known content and check generated clips against it. Mixed into a
    :class:`Dataset`."""

    @abstractmethod
    def prompts(self, n: int, seed: int) -> list[tuple[str, Any]]:
        """``n`` test prompts with the factors each asks for, the same for the same seed."""

    @abstractmethod
    def factors(self, split: str, index: int) -> Any:
        """The factors of clip ``index`` of ``split``."""

    @abstractmethod
    def ground_truth_metrics(
        self, video: Tensor, audio: Tensor, factors: list[Any], tolerance_s: float
    ) -> dict[str, float]:
        """Checks of clips (video (B, F, 3, H, W), audio (B, C, S)) against the factors asked for
        (e.g. audio-video synchronisation, class consistency); events match within ``tolerance_s``."""

    def prompt_edits(self, n: int, seed: int) -> dict[str, list[tuple[str, Any]]]:
        """Appendix E: ``base`` prompts and copies changing one ``non_audible`` or one ``audible``
        attribute, each with its factors."""
        raise NotImplementedError(f"{type(self).__name__} cannot make prompt edits")
