"""The recipe's structure (validation pass 1), as pydantic models. Torch-free on purpose.

Component parameters are validated in pass 2 against each component's own model
(see :mod:`sava_core.recipe`). Every model forbids unknown keys.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator


def path_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be one component of a path inside a run directory (it becomes a file or
    folder name: a recipe name, a variant, a sample id), or None when it can."""
    if not name or name.strip() != name:
        return "must be non-empty, without leading or trailing spaces"
    if name in (".", ".."):
        return f"{name!r} is not a name"
    bad = sorted({c for c in name if c in "/\\" or ord(c) < 32 or ord(c) == 127})
    if bad:
        return f"{name!r} contains {', '.join(repr(c) for c in bad)}: a name becomes one folder or file name"
    if len(name.encode()) > 200:
        return f"{name[:20]!r}... is {len(name.encode())} bytes long; keep names under 200 bytes"
    return None


def _check_path_name(value: str) -> str:
    problem = path_name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


PathName = Annotated[str, AfterValidator(_check_path_name)]
"""A string that becomes one file or folder name inside the run directory (:func:`path_name_problem`)."""


class StrictModel(BaseModel):
    """A pydantic model that rejects unknown keys."""

    model_config = ConfigDict(extra="forbid")


def component(kind: str, **kwargs: Any) -> Any:
    """A recipe field holding a :class:`ComponentRef` of ``kind`` (read by pass 2)."""
    return Field(json_schema_extra={"kind": kind}, **kwargs)


def normalise_sha256(value: str | None) -> str | None:
    """A sha256 digest as ``sha256sum`` prints it (lower-cased, stripped), or None; ValueError otherwise."""
    if value is None:
        return None
    value = value.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError("sha256 must be 64 hexadecimal digits (the output of `sha256sum FILE`)")
    return value


class WeightsParams(StrictModel):
    """Where a real component's weights come from (the base of real plug-ins' parameters):
    ``pretrained`` (a hub id, fetched only because the user wrote it, or a local directory) or
    ``preset: tiny`` (the same upstream classes from a small config with random weights under seed 0,
    offline; for tests and CPU smoke runs). Exactly one of the two."""

    pretrained: str | None = Field(
        None, description="hub id (downloaded once, then read from the hub cache) or local directory of the weights")
    preset: Literal["tiny"] | None = Field(
        None,
        description="tiny: same classes from a small config with random weights (seed 0), for tests and smoke runs",
    )
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32", description="dtype of the weights and of the computation (inputs and outputs stay float32)")

    @model_validator(mode="after")
    def _one_source(self) -> WeightsParams:
        if (self.pretrained is None) == (self.preset is None):
            raise ValueError("set exactly one of `pretrained` (a hub id or local directory) and `preset: tiny`")
        return self


class ComponentRef(StrictModel):
    """A registered component by short name, with its own parameters (validated in pass 2)."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class ModelSection(StrictModel):
    """The method's trainable and frozen parts (paper section 3). Encoders, backbones and the
    sampler are needed by the generation stages (pretrain, finetune, generate)."""

    adapter: ComponentRef = component("adapter", default=ComponentRef(name="mlp"))
    mask: ComponentRef = component("mask", default=ComponentRef(name="mlp"))
    decoder: ComponentRef = component("decoder", default=ComponentRef(name="mlp"))
    projector: ComponentRef = component("projector", default=ComponentRef(name="mlp"))
    video_encoder: ComponentRef | None = component(
        "video_encoder", default=None, description="f_v: the video latents Stage I aligns"
    )
    audio_encoder: ComponentRef | None = component(
        "audio_encoder", default=None, description="f_a: the audio latents Stage I aligns"
    )
    video_vae: ComponentRef | None = component(
        "video_encoder", default=None,
        description="the latent space the video backbone denoises (encode_grid / decode_grid); default: video_encoder",
    )
    audio_vae: ComponentRef | None = component(
        "audio_encoder", default=None,
        description="the latent space the audio backbone denoises, e.g. AudioLDM's mel VAE when f_a is CLAP; "
        "default: audio_encoder",
    )
    text_encoder: ComponentRef | None = component("text_encoder", default=None)
    video_text_encoder: ComponentRef | None = component(
        "text_encoder", default=None,
        description="the video backbone's own text encoder (e.g. CogVideoX's T5); default: text_encoder",
    )
    audio_text_encoder: ComponentRef | None = component(
        "text_encoder", default=None,
        description="the audio backbone's own text encoder (e.g. AudioLDM's CLAP); default: text_encoder",
    )
    video_backbone: ComponentRef | None = component("backbone", default=None)
    audio_backbone: ComponentRef | None = component("backbone", default=None)
    sampler: ComponentRef = component("sampler", default=ComponentRef(name="diffusers"))
    joint_generator: ComponentRef | None = component(
        "joint_generator", default=None, description="a model generating both streams at once (generate.mode: joint)")


class LossConfig(StrictModel):
    """Weights of Eq. 7. See docs/stage1.md (and sava_core/losses.py) for how each term is normalised."""

    alpha: float = Field(0.1, ge=0, description="weight of the normalised-L2 alignment of unmasked latents")
    lam: float = Field(5.0, ge=0, description="weight of the L1 (mean density) of both masks")


class TrainConfig(StrictModel):
    """Optimisation settings of one training phase."""

    steps: int = Field(1500, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0, description="peak learning rate (AdamW)")
    lr_schedule: Literal["constant", "cosine", "linear"] = Field(
        "constant", description="learning rate after warm-up: held, or decayed to 0 at the last step (cosine or linear)"
    )
    warmup_steps: int = Field(0, ge=0, description="steps of linear warm-up from 0 to lr")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(
        None, gt=0, description="clip the gradients' global L2 norm to this before each update; null: no clipping"
    )
    val_every: int = Field(250, ge=1, description="steps between validation losses")
    checkpoint_every: int = Field(500, ge=1, description="steps between checkpoints")
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches of batch_size per update")
    mixed_precision: Literal["no", "fp16", "bf16"] | None = Field(
        None, description="None: what `accelerate launch` / `accelerate config` says (default: no)"
    )


class ProbeConfig(StrictModel):
    """Linear probes of the audit: ridge regression fitted on train, scored (R^2) on test."""

    ridge: float = Field(1e-3, gt=0, description="L2 penalty, relative to the mean feature variance")
    max_train_tokens: int = Field(20000, ge=100, description="subsample of training tokens for the probes")


class AlignConfig(StrictModel):
    """Stage I: masked latent alignment, then the projector P_theta."""

    width: int = Field(32, ge=1, description="aligned latent width d (paper: 512)")
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    projector_train: TrainConfig = Field(default_factory=lambda: TrainConfig(steps=600))
    probe: ProbeConfig = Field(default_factory=ProbeConfig)


class PretrainConfig(StrictModel):
    """Settings of the ``pretrain`` stage, which a world plug-in supplies to train its own
    autoencoders and T2V / T2A backbones once.

    Weights go to ``weights`` (a directory) or, when null, to a user cache keyed by a hash of the
    world, the components and this section; a later run with the same key reuses them."""

    autoencoder: TrainConfig = Field(
        default_factory=lambda: TrainConfig(steps=1500, batch_size=8, lr=2e-3, val_every=500)
    )
    video: TrainConfig = Field(default_factory=lambda: TrainConfig(steps=4000, batch_size=32, lr=1e-3, val_every=1000))
    audio: TrainConfig = Field(default_factory=lambda: TrainConfig(steps=4000, batch_size=32, lr=1e-3, val_every=1000))
    text_dropout: float = Field(0.1, ge=0, lt=1, description="probability of the empty prompt (for guidance)")
    weights_dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32", description="precision the T2V / T2A weights are stored in (loaded as float32); float16 halves the "
        "files, as shipped with the media world. The autoencoders stay float32: rounding theirs to float16 moved the "
        "media world's audio latents by up to 2 standard deviations, away from what the backbones were trained on"
    )
    weights: str | None = Field(
        None, description="directory of the weights; `shipped`: those shipped with the world; null: the user cache"
    )


Direction = Literal["tv2a", "ta2v"]


class FinetuneConfig(StrictModel):
    """Stage II: TV2A (and TA2V) = the T2A (T2V) backbone + LoRA on its conditioning (cross-attention)
    layers, conditioned on [text ; phi(aligned latent)]; only LoRA and phi train."""

    directions: list[Direction] = Field(default_factory=lambda: list[Direction](["tv2a"]), min_length=1)
    condition_source: Literal["projector", "masked"] = Field(
        "projector",
        description="TV2A's training condition: P_theta(video latent) (what inference sees) "
        "or the Stage I masked latent",
    )
    lora_rank: int = Field(8, ge=1)
    lora_alpha: float = Field(8.0, gt=0)
    text_dropout: float = Field(0.1, ge=0, lt=1, description="probability of dropping text and condition together")
    text_only_dropout: float = Field(0.0, ge=0, lt=1, description="probability of dropping the text but keeping the "
                                     "aligned-latent condition, so that the condition alone also steers the generator")
    condition_dropout: float = Field(0.0, ge=0, lt=1, description="probability of dropping the aligned-latent "
                                     "condition but keeping the text, so that the generator also learns the text-only "
                                     "prediction that model.sampler.params.condition_guidance_scale guides from")
    text_swap: float = Field(0.0, ge=0, lt=1, description="probability of pairing a clip with another clip's text "
                             "while keeping its own aligned-latent condition, to teach the generator to follow the "
                             "condition where the two disagree (on the media world it then follows the video's timing, "
                             "not its class: docs/generation.md)")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(steps=1500, batch_size=32, lr=1e-3, val_every=500))


class GenerateConfig(StrictModel):
    """Stage III: cascaded sampling on the world's test prompts, ground-truth checks and outputs."""

    mode: str = Field(
        "cascade", description="a registered generation mode (`sava list generation_mode`): two_stream, cascade, "
                               "cascade_bidirectional, joint (model.joint_generator generates both streams, a "
                               "baseline, e.g. LTX-2), v2a (TV2A on the test clips' real video and captions, Table 2)")
    prompts: int = Field(16, ge=1, description="test prompts (sampled from the world's test factors)")
    prompt_seed: int = Field(12345, description="seed of the prompts (the same for every variant)")
    batch_size: int = Field(16, ge=1)
    event_tolerance: float = Field(0.25, gt=0, description="seconds within which a seen and a heard event match")
    save_media: int = Field(4, ge=0, description="samples written as mp4 + wav + figure")
    sensitivity: bool = Field(False, description="appendix E: also generate prompt pairs that change one non-audible "
                                                 "or one audible attribute under the same seeds "
                                                 "and report how much the audio changes")
    caption_shift: int = Field(0, ge=0, description="v2a: pair test clip i's real video with the caption of clip "
                               "i + caption_shift "
                               "(counterfactual captions: does the audio follow the video or the text?)")
    metrics: list[str] = Field(default_factory=list, description="metric specs as for `sava eval -m` (e.g. 'fad "
                               "extractor_params.checkpoint=/w/vggish.pth'), run on every generated clip")
    reference: str | None = Field(None, description="reference clips (folder or manifest) or statistics saved by "
                                                    "`sava eval --save-stats`, for the metrics that compare")


class TrackingConfig(StrictModel):
    """Experiment tracking through Accelerate's trackers; logs go to each run's ``tracking/``."""

    backend: Literal["tensorboard", "wandb", "mlflow", "none"] = "tensorboard"


class ReportConfig(StrictModel):
    """What the multi-run comparison shows."""

    columns: list[str] = Field(default_factory=list, description="metrics in the table; empty: all")
    plot: bool = True


class Recipe(StrictModel):
    """A whole recipe file."""

    name: PathName = Field(description="names the default run directory (runs/<name>-<time>)")
    description: str = ""
    stages: list[str] = Field(default_factory=lambda: ["align"], min_length=1,
                              description="registered stages (`sava list stage`), in their order")
    data: ComponentRef = component("dataset")
    model: ModelSection = Field(default_factory=ModelSection)
    align: AlignConfig = Field(default_factory=AlignConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    seed: int = Field(0, description="the seed of a single run; set per cell from `seeds`")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    variants: dict[PathName, list[str]] = Field(
        default_factory=dict, description="name -> key=value overrides; the name is the cell's folder")
    presets: dict[str, list[str]] = Field(
        default_factory=dict,
        description="name -> key=value overrides applied when `preset` names it (e.g. tiny: a CPU smoke run)",
    )
    preset: str | None = Field(None, description="apply presets[preset] before the command line's overrides")
    sweep: dict[str, list[Any]] = Field(default_factory=dict, description="dotted key -> values (a grid)")
    report: ReportConfig = Field(default_factory=ReportConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
