"""A media world: small audio-visual clips rendered procedurally from known factors.

The world follows the paper's causal model (section 2). Shared factors, seen and heard: the moving
object's class (colour and shape; pitch and timbre of its impact sound) and its impacts on the
floor (visible contact, optionally a flash; audible percussive onset at the same instants).
Video-only factors: background colour and texture, a silent static object. Audio-only factors:
wind (band-limited noise with gusts), hum (a low sine) and off-screen bird chirps.

Bands (Hz) keep the groups apart so the checkers in :mod:`sava_synth.events` can use them: hum
50-120, impact partials in :data:`ONSET_BAND` (180-2200), wind 100-1200, chirps 2600-3500.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sava_core.contracts import Clip, Dataset, GroundTruthWorld
from sava_synth.params import MediaWorldParams


@dataclass(frozen=True)
class ObjectClass:
    """A sounding object: its look (``colour`` RGB in [0, 1], ``shape``) and its impact sound
    (fundamental ``pitch`` in Hz, ``partials`` as (frequency multiple, amplitude), ``decay`` in s)."""

    noun: str
    colour_name: str
    colour: tuple[float, float, float]
    shape: str
    pitch: float
    partials: tuple[tuple[float, float], ...]
    decay: float


@dataclass(frozen=True)
class StaticObject:
    """A silent object standing on the floor; ``size`` is (width, height) as fractions of the frame."""

    noun: str
    colour_name: str
    colour: tuple[float, float, float]
    size: tuple[float, float]


CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("ball", "red", (0.9, 0.12, 0.1), "circle", 262.0, ((1, 1.0), (2, 0.3)), 0.08),
    ObjectClass("cube", "yellow", (0.95, 0.85, 0.1), "square", 392.0, ((1, 1.0), (3, 0.4)), 0.06),
    ObjectClass("gem", "magenta", (0.85, 0.2, 0.85), "diamond", 587.0, ((1, 1.0), (2.76, 0.35)), 0.12),
    ObjectClass("ring", "cyan", (0.1, 0.85, 0.9), "ring", 880.0, ((1, 1.0), (2, 0.25)), 0.15),
    ObjectClass("can", "orange", (1.0, 0.55, 0.05), "tall", 330.0, ((1, 1.0), (2, 0.5), (3, 0.25)), 0.05),
    ObjectClass("bell", "white", (0.95, 0.95, 0.95), "triangle", 494.0, ((1, 1.0), (4, 0.3)), 0.12),
)
BACKGROUNDS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("blue", (0.15, 0.2, 0.5)),
    ("grey", (0.35, 0.35, 0.35)),
    ("brown", (0.4, 0.27, 0.15)),
    ("green", (0.12, 0.35, 0.18)),
)
TEXTURES: tuple[str, ...] = ("plain", "striped", "checkered")
STATIC_OBJECTS: tuple[StaticObject, ...] = (
    StaticObject("box", "green", (0.3, 0.75, 0.3), (0.28, 0.28)),
    StaticObject("pillar", "grey", (0.7, 0.7, 0.7), (0.14, 0.55)),
    StaticObject("barrel", "blue", (0.4, 0.6, 1.0), (0.22, 0.38)),
)
#: Which factors belong to which group of the causal model.
FACTOR_GROUPS: dict[str, tuple[str, ...]] = {
    "shared": ("class_id", "event_times"),
    "video": ("background", "texture", "static_object"),
    "audio": ("wind", "hum", "offscreen_times"),
}
ONSET_BAND = (180.0, 2200.0)  # Hz; impact partials lie here, hum and chirps outside
HUM_RANGE = (50.0, 120.0)  # Hz
WIND_BAND = (100.0, 1200.0)  # Hz
CHIRP_BAND = (2600.0, 3500.0)  # Hz, a rising sweep
CHIRP_LENGTH = 0.12  # s
ATTACK = 0.002  # s, raised-cosine attack of impact tones (no broadband click)
TONE_DECAYS = 10  # impact tones are cut after this many decay times (-87 dB)
_COUNT_WORDS = ("once", "twice", "three times", "four times", "five times", "six times")
# shape -> distance from the centre to the shape's lowest point, in radii
_BOTTOM = {"circle": 1.0, "square": 0.85, "diamond": 1.1, "ring": 1.05, "tall": 1.0, "triangle": 0.85}


@dataclass(frozen=True)
class MediaFactors:
    """Everything a clip is rendered from. Times in seconds, positions as fractions of the width.

    ``static_object`` is an index into :data:`STATIC_OBJECTS` or None; ``noise_seed`` seeds the
    wind noise. ``event_gains`` are the impact tones' peak amplitudes, one per event.
    ``object_named`` says whether the caption names the moving object (else it says "something").
    """

    class_id: int
    event_times: tuple[float, ...]
    event_gains: tuple[float, ...]
    x_start: float
    x_end: float
    background: int
    texture: int
    static_object: int | None
    static_x: float
    wind: bool
    hum: bool
    hum_freq: float
    offscreen_times: tuple[float, ...]
    noise_seed: int
    object_named: bool = True

    @property
    def n_events(self) -> int:
        return len(self.event_times)


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from ``parts``, identical across processes and Python versions."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def caption_factors(factors: MediaFactors) -> dict[str, Any]:
    """The attributes a caption names: class (None when the caption leaves the object unnamed), number
    of impacts, background, static object, sounds."""
    cls = CLASSES[factors.class_id]
    static = None if factors.static_object is None else STATIC_OBJECTS[factors.static_object]
    return {
        "object": f"{cls.colour_name} {cls.noun}" if factors.object_named else None,
        "n_events": factors.n_events,
        "background": BACKGROUNDS[factors.background][0],
        "texture": TEXTURES[factors.texture],
        "static_object": None if static is None else f"{static.colour_name} {static.noun}",
        "wind": factors.wind,
        "hum": factors.hum,
        "offscreen": bool(factors.offscreen_times),
    }


def caption(factors: MediaFactors) -> str:
    """A VideoBLIP-like caption naming shared and modality-specific content, e.g. "a red ball bounces
    twice in front of a striped blue wall next to a green box, wind blowing, a bird chirps off-screen";
    "something bounces twice ..." when the object is left unnamed."""
    f = caption_factors(factors)
    n = f["n_events"]
    count = _COUNT_WORDS[n - 1] if n <= len(_COUNT_WORDS) else f"{n} times"
    texture = "" if f["texture"] == "plain" else f"{f['texture']} "
    subject = "something" if f["object"] is None else _article(f["object"])
    text = f"{subject} bounces {count} in front of {_article(texture + f['background'])} wall"
    if f["static_object"] is not None:
        text += f" next to {_article(f['static_object'])}"
    sounds = [s for s, on in (("wind blowing", f["wind"]), ("a low hum", f["hum"]),
                              ("a bird chirps off-screen", f["offscreen"])) if on]
    return ", ".join([text, *sounds])


def _article(phrase: str) -> str:
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


class MediaWorld(Dataset, GroundTruthWorld):
    """Clips of ``duration`` s: video (F, 3, H, W) in [0, 1] at ``fps``, mono audio (1, S) in [-1, 1]
    at ``sample_rate`` Hz, with F = round(duration * fps) and S = round(duration * sample_rate).

    ``media(split)`` renders clip i of a split from :meth:`sample_factors` of
    ``stable_seed(seed, split, i)``; ``render(factors)`` renders any factors, so prompts and prompt
    pairs that change one attribute (``dataclasses.replace`` or ``sample_factors(s, background=2)``)
    can be built and checked against ground truth.
    """

    Params = MediaWorldParams

    def __init__(self, params: MediaWorldParams):
        self.params = params

    @property
    def frames(self) -> int:
        """Video frames per clip, F."""
        return round(self.params.duration * self.params.fps)

    @property
    def samples(self) -> int:
        """Audio samples per clip, S."""
        return round(self.params.duration * self.params.sample_rate)

    def split_size(self, split: str) -> int:
        """Clips in ``split``."""
        sizes = {"train": self.params.n_train, "val": self.params.n_val, "test": self.params.n_test}
        if split not in sizes:
            raise KeyError(f"media_world has splits {list(sizes)}, not {split!r}")
        return sizes[split]

    def media(self, split: str) -> MediaWorldSplit:
        return MediaWorldSplit(self, split)

    def prompts(self, n: int, seed: int) -> list[tuple[str, MediaFactors]]:
        """Test prompts with their ground truth (see :func:`test_prompts`)."""
        return test_prompts(self, n, seed)

    def prompt_edits(self, n: int, seed: int) -> dict[str, list[tuple[str, MediaFactors]]]:
        """Appendix E: the :meth:`prompts` (``base``) and, under the same seeds, the same prompts with one
        non-audible attribute changed (``non_audible``: the wall colour) or one audible attribute
        changed (``audible``: the object's class, hence its look and its sound). Every prompt here names
        the object, so that changing the class changes the prompt."""
        base = [self.sample_factors(seed + i, object_named=True) for i in range(n)]
        non_audible = [self.sample_factors(seed + i, object_named=True,
                                           background=(f.background + 1) % len(BACKGROUNDS))
                       for i, f in enumerate(base)]
        audible = [self.sample_factors(seed + i, object_named=True, class_id=(f.class_id + 1) % self.params.n_classes)
                   for i, f in enumerate(base)]
        return {name: [(caption(f), f) for f in fs] for name, fs in
                (("base", base), ("non_audible", non_audible), ("audible", audible))}

    def ground_truth_metrics(self, video: Tensor, audio: Tensor, factors: list[MediaFactors],
                             tolerance_s: float) -> dict[str, float]:
        """See :func:`ground_truth_metrics`."""
        p = self.params
        return ground_truth_metrics(video, audio, p.fps, p.sample_rate, factors, p.n_classes, tolerance_s)

    def clip(self, split: str, index: int) -> Clip:
        """Clip ``index`` of ``split``; ``meta`` adds its split, index and seed."""
        clip = self.render(self.factors(split, index))
        clip.meta.update(split=split, index=index, seed=stable_seed(self.params.seed, split, index))
        return clip

    def factors(self, split: str, index: int) -> MediaFactors:
        """The factors clip ``index`` of ``split`` is rendered from (its ground truth)."""
        if not 0 <= index < self.split_size(split):
            raise IndexError(f"{split} has {self.split_size(split)} clips, not index {index}")
        return self.sample_factors(stable_seed(self.params.seed, split, index))

    # -- factors -----------------------------------------------------------------------------

    def sample_factors(self, seed: int, **fixed: Any) -> MediaFactors:
        """Draw a clip's factors from ``seed``, holding the attributes a prompt names in ``fixed``.

        ``fixed`` may hold ``class_id``, ``n_events``, ``background``, ``texture``,
        ``static_object`` (index or None), ``wind``, ``hum``, ``offscreen`` and ``object_named`` (bool). Each factor
        draws from its own generator, so fixing or changing one attribute leaves all others equal
        under the same seed (changing ``n_events`` redraws only the impact times and gains).
        """
        allowed = {"class_id", "n_events", "background", "texture", "static_object", "wind", "hum", "offscreen",
                   "object_named"}
        if unknown := set(fixed) - allowed:
            raise ValueError(f"cannot fix {sorted(unknown)}; choose from {sorted(allowed)}")
        p = self.params
        sizes = {"class_id": p.n_classes, "background": len(BACKGROUNDS), "texture": len(TEXTURES),
                 "static_object": len(STATIC_OBJECTS)}
        for name, size in sizes.items():
            if fixed.get(name) is not None and not 0 <= fixed[name] < size:
                raise ValueError(f"{name} {fixed[name]} outside 0..{size - 1}")

        def rng(name: str) -> torch.Generator:
            return torch.Generator().manual_seed(stable_seed(seed, name))

        def uniform(g: torch.Generator, n: int = 1, lo: float = 0.0, hi: float = 1.0) -> list[float]:
            return (lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)).tolist()

        def integer(g: torch.Generator, lo: int, hi: int) -> int:
            return int(torch.randint(lo, hi + 1, (1,), generator=g))

        class_id = fixed.get("class_id", integer(rng("class"), 0, p.n_classes - 1))
        n_events = fixed.get("n_events", integer(rng("count"), p.min_events, p.max_events))
        if n_events < 1:
            raise ValueError(f"n_events must be >= 1, not {n_events}")
        lo, hi = 1 / p.fps, (self.frames - 2) / p.fps
        slack = hi - lo - (n_events - 1) * p.min_gap
        if slack < 0:
            raise ValueError(f"{n_events} impacts {p.min_gap} s apart do not fit in a {p.duration} s clip")
        g = rng("events")
        offsets = sorted(uniform(g, n_events, 0.0, slack))
        event_times = tuple(lo + o + i * p.min_gap for i, o in enumerate(offsets))
        event_gains = tuple(uniform(g, n_events, 0.6, 0.9))

        g = rng("motion")
        x_start, distance, direction = uniform(g, 3)
        x_end = x_start + (0.3 + 0.5 * distance) * (1 if direction < 0.5 else -1)
        if not 0 <= x_end <= 1:
            x_end = min(max(2 * x_start - x_end, 0.0), 1.0)

        g = rng("static")
        has_static, kind, static_x = uniform(g, 3)
        static_object = int(kind * len(STATIC_OBJECTS)) if has_static < p.p_static else None
        static_object = fixed.get("static_object", static_object)

        g = rng("hum")
        has_hum, hum_freq = uniform(g, 2)
        g = rng("offscreen")
        has_offscreen = uniform(g)[0] < p.p_offscreen
        n_chirps = integer(g, 1, p.max_offscreen)
        chirp_times = tuple(sorted(uniform(g, n_chirps, 0.0, p.duration - CHIRP_LENGTH)))
        return MediaFactors(
            class_id=class_id,
            event_times=event_times,
            event_gains=event_gains,
            x_start=x_start,
            x_end=x_end,
            background=fixed.get("background", integer(rng("background"), 0, len(BACKGROUNDS) - 1)),
            texture=fixed.get("texture", integer(rng("texture"), 0, len(TEXTURES) - 1)),
            static_object=static_object,
            static_x=static_x,
            wind=bool(fixed.get("wind", uniform(rng("wind"))[0] < p.p_wind)),
            hum=bool(fixed.get("hum", has_hum < p.p_hum)),
            hum_freq=HUM_RANGE[0] + hum_freq * (HUM_RANGE[1] - HUM_RANGE[0]),
            offscreen_times=chirp_times if fixed.get("offscreen", has_offscreen) else (),
            noise_seed=stable_seed(seed, "noise"),
            object_named=bool(fixed.get("object_named", uniform(rng("naming"))[0] < p.p_object_named)),
        )

    # -- rendering ---------------------------------------------------------------------------

    def render(self, factors: MediaFactors) -> Clip:
        """Render ``factors`` into a :class:`Clip` whose ``meta`` holds the ground truth."""
        if not 0 <= factors.class_id < len(CLASSES):
            raise ValueError(f"class_id {factors.class_id} outside 0..{len(CLASSES) - 1}")
        cls = CLASSES[factors.class_id]
        static = None if factors.static_object is None else STATIC_OBJECTS[factors.static_object]
        meta = {
            "class_id": factors.class_id,
            "class_name": f"{cls.colour_name} {cls.noun}",
            "event_times": list(factors.event_times),
            "n_events": factors.n_events,
            "background": BACKGROUNDS[factors.background][0],
            "texture": TEXTURES[factors.texture],
            "static_object": None if static is None else f"{static.colour_name} {static.noun}",
            "wind": factors.wind,
            "hum": factors.hum,
            "hum_freq": factors.hum_freq if factors.hum else None,
            "offscreen": bool(factors.offscreen_times),
            "offscreen_times": list(factors.offscreen_times),
            "caption_factors": caption_factors(factors),
            "factor_groups": {k: list(v) for k, v in FACTOR_GROUPS.items()},
            "factors": dataclasses.asdict(factors),
        }
        return Clip(
            video=self.render_video(factors),
            audio=self.render_audio(factors),
            fps=self.params.fps,
            sample_rate=self.params.sample_rate,
            caption=caption(factors),
            meta=meta,
        )

    def heights(self, times: Tensor, factors: MediaFactors) -> Tensor:
        """Height of the object's lowest point above the floor (pixels) at ``times`` (s), shape of ``times``.

        Between impacts the object follows parabolic arcs; before the first impact it falls from
        the apex of an arc mirrored about t = 0, after the last it rises on an arc cut by the end.
        Apexes grow with the arc's length and stop one pixel below the top of the frame.
        """
        p = self.params
        radius = p.object_radius * p.height
        top = p.height - 1 - radius * (1 + _BOTTOM[CLASSES[factors.class_id].shape])
        first, last = factors.event_times[0], factors.event_times[-1]
        knots = torch.tensor([-first, *factors.event_times, 2 * p.duration - last], dtype=torch.float64)
        seg = torch.searchsorted(knots, times.double(), right=True).clamp(1, len(knots) - 1)
        a, b = knots[seg - 1], knots[seg]
        s = ((times - a) / (b - a)).clamp(0, 1)
        apex = top * torch.clamp(0.3 + (b - a), max=1.0)
        return (apex * 4 * s * (1 - s)).float()

    def render_video(self, factors: MediaFactors) -> Tensor:
        """Video (F, 3, H, W) in [0, 1]; frame k shows the instant k / fps."""
        p = self.params
        h, w, f = p.height, p.width, self.frames
        cls = CLASSES[factors.class_id]
        ys = torch.arange(h, dtype=torch.float32) + 0.5
        xs = torch.arange(w, dtype=torch.float32) + 0.5

        colour = torch.tensor(BACKGROUNDS[factors.background][1]).view(3, 1, 1)
        texture = TEXTURES[factors.texture]
        shade = torch.ones(h, w)
        period = max(2, w // 4)
        if texture == "striped":
            shade = shade + 0.15 * torch.where((xs // (period // 2)) % 2 == 0, 1.0, -1.0).expand(h, w)
        elif texture == "checkered":
            checks = ((ys[:, None] // (period // 2)) + (xs[None, :] // (period // 2))) % 2
            shade = shade + 0.15 * torch.where(checks == 0, 1.0, -1.0)
        frame = (colour * shade).clamp(0, 1)

        if factors.static_object is not None:
            obj = STATIC_OBJECTS[factors.static_object]
            half_w, top = obj.size[0] * w / 2, h * (1 - obj.size[1])
            cx = half_w + factors.static_x * (w - 2 * half_w)
            sdf = torch.maximum((xs[None, :] - cx).abs() - half_w, top - ys[:, None])
            alpha = (0.5 - sdf).clamp(0, 1)
            frame = frame * (1 - alpha) + torch.tensor(obj.colour).view(3, 1, 1) * alpha

        radius = p.object_radius * h
        times = torch.arange(f, dtype=torch.float64) / p.fps
        cy = h - radius * _BOTTOM[cls.shape] - self.heights(times, factors)
        left, right = radius, w - radius
        cx = left + (right - left) * (factors.x_start + (factors.x_end - factors.x_start) * times / p.duration)
        dx = xs.view(1, 1, w) - cx.float().view(f, 1, 1)
        dy = ys.view(1, h, 1) - cy.float().view(f, 1, 1)
        alpha = (0.5 - _shape_sdf(cls.shape, dx, dy, radius)).clamp(0, 1).unsqueeze(1)  # (F, 1, H, W)
        tint = torch.tensor(cls.colour).view(1, 3, 1, 1).repeat(f, 1, 1, 1)
        if p.flash:
            for t in factors.event_times:
                k = min(round(t * p.fps), f - 1)
                tint[k] = tint[k] + 0.5 * (1 - tint[k])
        return (frame.unsqueeze(0) * (1 - alpha) + tint * alpha).clamp(0, 1)

    def render_audio(self, factors: MediaFactors) -> Tensor:
        """Mono audio (1, S) in [-1, 1]: impact tones + wind + hum + chirps, peak-limited to 0.99."""
        p = self.params
        sr, n = p.sample_rate, self.samples
        t = torch.arange(n, dtype=torch.float64) / sr
        audio = torch.zeros(n, dtype=torch.float64)
        cls = CLASSES[factors.class_id]

        length = round(TONE_DECAYS * cls.decay * sr)
        tt = torch.arange(length, dtype=torch.float64) / sr
        attack = torch.where(tt < ATTACK, 0.5 - 0.5 * torch.cos(math.pi * tt / ATTACK), torch.ones_like(tt))
        partials = [(m, a) for m, a in cls.partials if m * cls.pitch < ONSET_BAND[1]]
        norm = sum(a for _, a in partials)
        tone = sum(a * torch.sin(2 * math.pi * m * cls.pitch * tt) for m, a in partials) / norm
        tone = tone * attack * torch.exp(-tt / cls.decay)
        for start, gain in zip(factors.event_times, factors.event_gains):
            i = round(start * sr)
            m = min(length, n - i)
            audio[i:i + m] += gain * tone[:m]

        g = torch.Generator().manual_seed(factors.noise_seed)
        if factors.wind:
            spectrum = torch.fft.rfft(torch.randn(n, generator=g, dtype=torch.float64))
            freqs = torch.fft.rfftfreq(n, 1 / sr)
            spectrum[(freqs < WIND_BAND[0]) | (freqs > WIND_BAND[1])] = 0
            noise = torch.fft.irfft(spectrum, n)
            gust = 1 + 0.5 * torch.sin(2 * math.pi * 0.7 * t + 2 * math.pi * torch.rand(1, generator=g).item())
            audio += p.wind_level * gust * noise / noise.std()
        if factors.hum:
            audio += p.hum_level * torch.sin(2 * math.pi * factors.hum_freq * t)
        chirp_n = round(CHIRP_LENGTH * sr)
        tc = torch.arange(chirp_n, dtype=torch.float64) / sr
        sweep = (CHIRP_BAND[1] - CHIRP_BAND[0]) / CHIRP_LENGTH
        chirp = torch.sin(2 * math.pi * (CHIRP_BAND[0] * tc + 0.5 * sweep * tc**2))
        chirp = p.chirp_level * chirp * torch.hann_window(chirp_n, periodic=False, dtype=torch.float64)
        for start in factors.offscreen_times:
            i = round(start * sr)
            m = min(chirp_n, n - i)
            audio[i:i + m] += chirp[:m]

        peak = audio.abs().max().item()
        if peak > 0.99:
            audio = audio * (0.99 / peak)
        return audio.float().unsqueeze(0)


def _shape_sdf(shape: str, dx: Tensor, dy: Tensor, r: float) -> Tensor:
    """Signed distance (pixels, negative inside) to ``shape`` of radius ``r`` at offsets (dx, dy)."""
    ax, ay = dx.abs(), dy.abs()
    if shape == "circle":
        return torch.sqrt(dx**2 + dy**2) - r
    if shape == "square":
        return torch.maximum(ax, ay) - 0.85 * r
    if shape == "diamond":
        return (ax + ay - 1.1 * r) / math.sqrt(2)
    if shape == "ring":
        return (torch.sqrt(dx**2 + dy**2) - 0.75 * r).abs() - 0.3 * r
    if shape == "tall":
        return torch.maximum(ax - 0.55 * r, ay - r)
    if shape == "triangle":  # apex up at (0, -r), base corners at (+-r, 0.85 r)
        return torch.maximum(dy - 0.85 * r, (1.85 * ax - dy - r) / math.hypot(1, 1.85))
    raise ValueError(f"unknown shape {shape!r}")


class MediaWorldSplit(torch.utils.data.Dataset):
    """One split of a :class:`MediaWorld` as a map-style dataset of :class:`Clip`, rendered on access."""

    def __init__(self, world: MediaWorld, split: str):
        self.world = world
        self.split = split
        self._len = world.split_size(split)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> Clip:
        if index < 0:
            index += self._len
        return self.world.clip(self.split, index)


def test_prompts(world: MediaWorld, n: int, seed: int) -> list[tuple[str, MediaFactors]]:
    """``n`` prompts with their ground-truth factors, drawn from seeds ``seed``, ``seed + 1``, ..."""
    return [(caption(f), f) for f in (world.sample_factors(seed + i) for i in range(n))]


def ground_truth_metrics(video: Tensor, audio: Tensor, fps: float, sample_rate: int, factors: list[MediaFactors],
                         n_classes: int, tolerance_s: float) -> dict[str, float]:
    """Checks of generated clips against what their prompts asked for and against each other.

    video (N, F, 3, H, W) in [0, 1], audio (N, C, S) in [-1, 1]. Returns means over clips of:
    ``sync_error_ms`` (for each seen impact, the distance to the nearest heard one, capped at 1 s;
    1 s when nothing is heard), ``event_f1`` (heard vs seen impacts matched within ``tolerance_s``),
    ``class_consistency`` (the class seen equals the class heard), ``video_class_acc`` and
    ``audio_class_acc`` (equal to the prompt's class; over the prompts that name the object) and
    ``count_acc`` (seen impacts = prompted). ``sync_error_ms_shuffled`` is the sync error of each
    clip's audio against the next clip's video: its chance level (audio unrelated to the video scores
    the same in both; it falls as the audio has more onsets). When only some prompts name the object,
    ``class_consistency_named`` and ``class_consistency_unnamed`` split the consistency between them."""
    from sava_synth.events import (
        classify_audio,
        classify_video,
        detect_audio_events,
        detect_visual_events,
        match_events,
    )

    def sync_error_ms(seen: list[float], heard: list[float]) -> float:
        gaps = [min([abs(s - h) for h in heard] + [1.0]) for s in seen]
        return 1000 * sum(gaps) / len(gaps) if gaps else (0.0 if not heard else 1000.0)

    rows: dict[str, list[float]] = {k: [] for k in ("sync_error_ms", "sync_error_ms_shuffled", "event_f1",
                                                   "class_consistency", "video_class_acc", "audio_class_acc",
                                                   "count_acc", "class_consistency_named", "class_consistency_unnamed")}
    seen_all = [detect_visual_events(v, fps) for v in video]
    for i, (v, a, f) in enumerate(zip(video, audio, factors)):
        seen, heard = seen_all[i], detect_audio_events(a, sample_rate)
        rows["sync_error_ms"].append(sync_error_ms(seen, heard))
        if len(video) > 1:
            rows["sync_error_ms_shuffled"].append(sync_error_ms(seen_all[(i + 1) % len(video)], heard))
        rows["event_f1"].append(match_events(heard, seen, tolerance_s)["f1"])
        cv, ca = classify_video(v, n_classes), classify_audio(a, sample_rate, n_classes)
        rows["class_consistency"].append(float(cv == ca))
        rows["class_consistency_named" if f.object_named else "class_consistency_unnamed"].append(float(cv == ca))
        if f.object_named:
            rows["video_class_acc"].append(float(cv == f.class_id))
            rows["audio_class_acc"].append(float(ca == f.class_id))
        rows["count_acc"].append(float(len(seen) == f.n_events))
    if not rows["class_consistency_unnamed"]:
        del rows["class_consistency_named"]
    return {k: sum(v) / len(v) for k, v in rows.items() if v}
