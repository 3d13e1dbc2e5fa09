"""``sava validate --build``: every component of a recipe at its configured size on torch's meta device
(no memory, no weights), one Stage I step, one Stage II LoRA forward/backward per backbone and one
sampling step at the recipe's shapes, and per component its parameter count, trainable parameters
under LoRA and an estimate of its memory.

Weights are never read. A component whose ``pretrained`` is a local directory is built from the
configs in it; one whose ``pretrained`` is a hub id is built from the config files that a plug-in
ships for that id: ``<plug-in package>/configs/<owner>--<name>/`` in the hub's own layout
(``transformer/config.json``, ``vae/config.json``, ...). Any installed plug-in package may ship them.

While :func:`released_sizes` is active, ``from_pretrained`` of diffusers and transformers models
builds the class from its ``config.json`` on the meta device (in the requested dtype), tokenizers
are placeholders that refuse to tokenize (nothing here tokenizes: text tokens are meta tensors of
the encoder's width and length), and hub ids resolve to the shipped configs; nothing is downloaded.
A diffusers pipeline's ``from_pretrained`` (LTX-2's ``LTX2Pipeline``) loads each of its components
through these, so it is built on meta from the pipeline folder's ``model_index.json`` and sub-folders.

A joint generator is reported whole and per sub-model (``joint_generator.<name>``: its children, a
ModuleDict's entries in its place), and runs its ``check_step()`` when it has one (LTX-2: the first guided
denoising step of its schedule at its call sizes, from zero text embeddings), which returns its latent shapes.

Memory model (bytes, activations NOT included): inference = parameters x bytes of the component's
dtype; training = frozen parameters x dtype bytes + trainable parameters x (dtype bytes for the
weight + dtype bytes for its gradient + 8 for Adam's two float32 moments). Stage I modules and phi
train in float32 (16 bytes per parameter).
"""

from __future__ import annotations

import contextlib
import importlib.resources
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sava_core.config import ComponentRef, Recipe
from sava_core.errors import SavaError
from sava_core.registry import Registries

META = torch.device("meta")
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass
class ComponentSize:
    """One built component: where it sits, what it is, its sizes and memory estimates (bytes)."""

    slot: str
    name: str
    source: str  # the hub id / directory its config came from, or "recipe" for Stage I modules
    dtype: str
    params: int
    trainable: int  # backbones: the LoRA parameters Stage II adds (not in params); Stage I modules, phi: all
    train_bytes: int
    infer_bytes: int


@dataclass
class BuildReport:
    recipe: str
    shapes: dict[str, tuple[int, ...]]
    components: list[ComponentSize]

    def table(self) -> str:
        w = max([22, *(len(c.slot) for c in self.components)])
        rows = [f"{'slot':<{w}} {'component':<16} {'dtype':<9} {'params':>15} {'trainable':>13} "
                f"{'train GiB':>10} {'infer GiB':>10}  source"]
        for c in self.components:
            rows.append(f"{c.slot:<{w}} {c.name:<16} {c.dtype:<9} {c.params:>15,} {c.trainable:>13,} "
                        f"{c.train_bytes / 2**30:>10.2f} {c.infer_bytes / 2**30:>10.2f}  {c.source}")
        shapes = ", ".join(f"{k} {tuple(v)}" for k, v in self.shapes.items())
        return "\n".join([f"shapes: {shapes}", *rows,
                          "memory: weights (+ gradients and Adam states of trainable parameters for training); "
                          "activations not included"])


# ----------------------------------------------------------------------------------- building from configs


def _config_roots(registries: Registries) -> list[Path]:
    """Every ``configs/`` folder shipped by a package that registered components."""
    packages: dict[str, None] = {}
    for entry in registries.entries():
        packages[entry.target.split(":")[0].split(".")[0]] = None
    roots = []
    for package in packages:
        try:
            folder = Path(str(importlib.resources.files(package) / "configs"))
        except (ModuleNotFoundError, TypeError):
            continue
        if folder.is_dir():
            roots.append(folder)
    return roots


def shipped_config(hub_id: str, setting: str, roots: list[Path]) -> str:
    """The folder of configs shipped for ``hub_id`` (``owner--name`` in a plug-in's ``configs/``)."""
    name = hub_id.replace("/", "--")
    for root in roots:
        if (root / name).is_dir():
            return str(root / name)
    shipped = sorted(p.name.replace("--", "/") for r in roots for p in r.iterdir() if p.is_dir())
    raise SavaError(f"{setting}: no released configuration of {hub_id!r} ships with the installed plug-ins "
                    f"(shipped: {', '.join(shipped) or 'none'}); point it at a local directory with its config files")


class _NoTokenizer:
    """Stands for a tokenizer under :func:`released_sizes`; tokenizing is an error."""

    def __init__(self, source: Any):
        import json

        self.source = source
        config = Path(str(source)) / "tokenizer_config.json"
        shipped = json.loads(config.read_text()) if config.is_file() else {}
        self.model_max_length = int(shipped.get("model_max_length", 10**6))

    def __len__(self) -> int:
        return 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise SavaError(f"sava validate --build does not tokenize (no tokenizer files for {self.source})")


def _diffusers_from_config(cls: Any, path: Any, *args: Any, subfolder: str | None = None, **kwargs: Any) -> Any:
    config = cls.load_config(str(path), subfolder=subfolder)
    with torch.device(META):
        model = cls.from_config(config)
    dtype = kwargs.get("dtype") or kwargs.get("torch_dtype")
    return model.to(dtype) if dtype is not None else model


def _transformers_from_config(cls: Any, path: Any, *args: Any, **kwargs: Any) -> Any:
    from transformers import AutoConfig

    config = kwargs.pop("config", None) or AutoConfig.from_pretrained(str(path), subfolder=kwargs.get("subfolder", ""))
    if cls.config_class is not None and not isinstance(config, cls.config_class):
        config = cls.config_class.from_pretrained(str(path))
    with torch.device(META):
        model = cls._from_config(config)
    dtype = kwargs.get("dtype") or kwargs.get("torch_dtype")
    return model.to(dtype) if isinstance(dtype, torch.dtype) else model


@contextlib.contextmanager
def released_sizes(registries: Registries) -> Iterator[None]:
    """Build components from configs on the meta device (module docstring); restores everything after."""
    import diffusers
    import transformers

    import sava_core.pretrained as pretrained

    roots = _config_roots(registries)
    saved: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, value: Any) -> None:
        saved.append((owner, name, owner.__dict__[name] if name in owner.__dict__ else getattr(owner, name)))
        setattr(owner, name, value)

    def from_hub(repo_id: str, setting: str, allow_patterns: list[str] | None = None) -> str:
        return shipped_config(repo_id, setting, roots)

    patch(pretrained, "_from_hub", from_hub)
    patch(diffusers.ModelMixin, "from_pretrained", classmethod(_diffusers_from_config))
    patch(transformers.PreTrainedModel, "from_pretrained", classmethod(_transformers_from_config))
    no_tok = classmethod(lambda cls, path, *a, **k: _NoTokenizer(path))
    patch(transformers.PreTrainedTokenizerBase, "from_pretrained", no_tok)
    merge = diffusers.UNetMotionModel.from_unet2d.__func__  # copies weights into a new model: build that on meta

    def from_unet2d(cls: Any, *args: Any, **kwargs: Any) -> Any:
        with torch.device(META):
            return merge(cls, *args, **kwargs)

    patch(diffusers.UNetMotionModel, "from_unet2d", classmethod(from_unet2d))
    patch(transformers.AutoTokenizer, "from_pretrained", staticmethod(lambda path, *a, **k: _NoTokenizer(path)))
    try:
        yield
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


# ----------------------------------------------------------------------------------- the check


def _count(module: nn.Module) -> tuple[int, int]:
    params = {id(p): p for p in module.parameters()}.values()
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def _size(slot: str, ref: ComponentRef | None, module: nn.Module, dtype: str | None = None,
          source: str | None = None, base: int | None = None) -> ComponentSize:
    """``base``: the parameters before LoRA (then the rest are LoRA's, all trainable)."""
    params, trainable = _count(module)
    if base is not None:
        params, trainable = base, params - base
    dtype = dtype or (ref.params.get("dtype", "float32") if ref is not None else "float32")
    b = DTYPE_BYTES[dtype]
    frozen = params - trainable if base is None else params
    train = frozen * b + trainable * (2 * b + 8)
    name = ref.name if ref is not None else slot
    src = source or (str(ref.params.get("pretrained") or ref.params.get("preset")) if ref is not None else "recipe")
    return ComponentSize(slot, name, src, dtype, params, trainable, train, params * b)


def _media_shapes(recipe: Recipe) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(video (1, F, 3, H, W), audio (1, 1, S)) of one clip as the dataset settings give it."""
    p = recipe.data.params
    missing = [k for k in ("fps", "sample_rate", "height", "width") if p.get(k) is None]
    length = p.get("segment") or p.get("duration")
    if missing or length is None:
        raise SavaError(f"data.params: sava validate --build needs the clip shape; set "
                        f"{', '.join(missing + ([] if length else ['segment']))}")
    frames = round(float(length) * float(p["fps"]))
    return (1, frames, 3, int(p["height"]), int(p["width"])), (1, 1, round(float(length) * int(p["sample_rate"])))


def _meta(shape: tuple[int, ...]) -> Tensor:
    return torch.zeros(shape, device=META)


def _grid(encoder: Any, media: Tensor, slot: str) -> Tensor:
    try:
        return encoder.encode_grid(media)
    except SavaError:
        raise
    except (RuntimeError, NotImplementedError, ValueError, TypeError) as err:
        raise SavaError(f"model.{slot}: cannot encode a clip of shape {tuple(media.shape)} at the released size: "
                        f"{type(err).__name__}: {err}") from None


def check_build(recipe: Recipe, registries: Registries) -> BuildReport:
    """Build ``recipe``'s components at their configured sizes on the meta device, run one step of each
    stage it trains or samples, and report the sizes (module docstring)."""
    from sava_core.alignment import AlignModel, build_projector
    from sava_core.conditioning import Phi, add_lora
    from sava_core.contracts import Condition
    from sava_core.generators import build_slot, text_encoder_ref
    from sava_core.losses import AlignObjective, DiffusionObjective

    m = recipe.model
    sizes: list[ComponentSize] = []
    shapes: dict[str, tuple[int, ...]] = {}
    video_shape, audio_shape = _media_shapes(recipe)
    shapes["video"], shapes["audio"] = video_shape, audio_shape
    with released_sizes(registries):
        if m.joint_generator is not None:
            gen = registries["joint_generator"].build(m.joint_generator.name, m.joint_generator.params)
            sizes.append(_size("joint_generator", m.joint_generator, gen))
            sizes += [_size(f"joint_generator.{name}", m.joint_generator, part) for name, part in _parts(gen)]
            shapes.update(_joint_step(gen))
            return BuildReport(recipe.name, shapes, sizes)
        built: dict[str, Any] = {}
        for slot in ("video_encoder", "audio_encoder", "video_vae", "audio_vae"):
            ref = getattr(m, slot)
            if ref is None or (slot.endswith("_vae") and ref == getattr(m, slot.replace("_vae", "_encoder"))):
                continue
            built[slot] = build_slot(recipe, registries, slot, None).to(META)
            sizes.append(_size(slot, ref, built[slot]))
        vvae = built.get("video_vae", built["video_encoder"])
        avae = built.get("audio_vae", built["audio_encoder"])
        with torch.no_grad():
            vgrid = _grid(vvae, _meta(video_shape), "video_vae" if "video_vae" in built else "video_encoder")
            agrid = _grid(avae, _meta(audio_shape), "audio_vae" if "audio_vae" in built else "audio_encoder")
        shapes["video_grid"], shapes["audio_grid"] = tuple(vgrid.shape), tuple(agrid.shape)
        venc, aenc = built["video_encoder"], built["audio_encoder"]
        steps = max(int(vgrid.shape[1]), 1)
        xv, xa = _meta((2, steps, int(venc.latent_dim))), _meta((2, steps, int(aenc.latent_dim)))
        shapes["stage1_video"], shapes["stage1_audio"] = tuple(xv.shape), tuple(xa.shape)
        # Stage I: adapters, masks, decoders and P_theta, one forward/backward
        align = AlignModel(recipe, registries, int(venc.latent_dim), int(aenc.latent_dim)).to(META)
        loss = AlignObjective(align, recipe.align.loss.alpha, recipe.align.loss.lam)(xv, xa)["loss"]
        loss.backward()
        for name, part in (("adapter", (align.q_v, align.q_a)), ("mask", (align.m_v, align.m_a)),
                           ("decoder", (align.g_v, align.g_a))):
            sizes.append(_size(f"{name} (v + a)", getattr(m, name), nn.ModuleList(part), "float32", "recipe"))
        projector = build_projector(recipe, registries, int(venc.latent_dim)).to(META)
        projector(xv).float().pow(2).mean().backward()
        sizes.append(_size("projector", m.projector, projector, "float32", "recipe"))
        # text encoders and backbones
        texts: dict[str, Any] = {}
        for modality in ("video", "audio"):
            ref = text_encoder_ref(recipe, modality)
            other = texts.get("video") if modality == "audio" and ref == text_encoder_ref(recipe, "video") else None
            texts[modality] = other or registries["text_encoder"].build(ref.name, ref.params)
            if other is None:
                slot = f"{modality}_text_encoder" if getattr(m, f"{modality}_text_encoder") else "text_encoder"
                sizes.append(_size(slot, ref, texts[modality]))
        sampler = registries["sampler"].build(m.sampler.name, m.sampler.params)
        rank, alpha = recipe.finetune.lora_rank, recipe.finetune.lora_alpha
        for modality, grid in (("video", vgrid), ("audio", agrid)):
            slot = f"{modality}_backbone"
            ref = getattr(m, slot)
            if ref is None:
                continue
            text = texts[modality]
            backbone = build_slot(recipe, registries, slot, None, latent_shape=tuple(grid.shape[1:]),
                                  condition_dim=int(text.dim)).to(META)
            length = _text_length(backbone, text)
            tokens = _meta((1, length, int(text.dim)))
            mask = torch.ones((1, length), dtype=torch.bool, device=META)
            x0 = _meta((1, *grid.shape[1:]))
            _sample_step(backbone, sampler, x0, Condition(tokens, mask), slot)
            base = _count(backbone)[0]
            add_lora(backbone, rank, alpha)
            phi = Phi(recipe.align.width, int(text.dim)).to(META)
            extra = _meta((1, steps, recipe.align.width))
            objective = DiffusionObjective(backbone, sampler, 0.1, phi)
            try:
                objective(x0, tokens, mask, tokens, mask, extra)["loss"].backward()
            except SavaError:
                raise
            except (RuntimeError, ValueError, TypeError) as err:
                raise SavaError(f"model.{slot}: the Stage II step at grid {tuple(x0.shape)} failed: "
                                f"{type(err).__name__}: {err}") from None
            sizes.append(_size(slot, ref, backbone, base=base))
            sizes.append(_size(f"phi ({modality})", None, phi, "float32", "recipe"))
    return BuildReport(recipe.name, shapes, sizes)


def _parts(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """A joint generator's sub-models: its children, with a ModuleDict's entries in its place."""
    parts: list[tuple[str, nn.Module]] = []
    for name, child in module.named_children():
        parts += list(child.items()) if isinstance(child, nn.ModuleDict) else [(name, child)]
    return parts


def _joint_step(gen: Any) -> dict[str, tuple[int, ...]]:
    """The joint generator's ``check_step()`` (one guided denoising step at its call sizes, returning
    the shapes of its latents), when it has one."""
    step = getattr(gen, "check_step", None)
    if step is None:
        return {}
    try:
        return dict(step())
    except SavaError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise SavaError(f"model.joint_generator: a denoising step at the configured sizes failed: "
                        f"{type(err).__name__}: {err}") from None


def _text_length(backbone: Any, text: Any) -> int:
    """Text tokens per prompt the backbone gets: its own fixed length, one pooled token, the encoder's
    padded length, or its model's position table (77 for CLIP)."""
    if getattr(backbone, "text_length", None):
        return int(backbone.text_length)
    if getattr(getattr(text, "params", None), "output", None) == "pooled":
        return 1
    if getattr(text, "max_length", None):
        return int(text.max_length)
    config = getattr(getattr(text, "model", None), "config", None)
    return int(getattr(config, "max_position_embeddings", None) or 77)


def _sample_step(backbone: Any, sampler: Any, x0: Tensor, cond: Any, slot: str) -> None:
    """One guided reverse step at the recipe's grid: the conditional and unconditional predictions
    and the scheduler's update."""
    scheduler = sampler.train_scheduler(backbone)
    scheduler.set_timesteps(int(getattr(sampler.params, "steps", 50)))
    t = scheduler.timesteps[0]
    timestep = torch.full((x0.shape[0],), int(t), device=META)
    try:
        with torch.no_grad():
            eps = backbone(x0, timestep, cond)
            eps_u = backbone(x0, timestep, cond)
            if tuple(eps.shape) != tuple(x0.shape):
                raise SavaError(f"model.{slot}: predicts {tuple(eps.shape)} for a grid of {tuple(x0.shape)}")
            scheduler.step(eps_u + 2.0 * (eps - eps_u), t, x0)
    except SavaError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise SavaError(f"model.{slot}: a sampling step at grid {tuple(x0.shape)} failed: "
                        f"{type(err).__name__}: {err}") from None
