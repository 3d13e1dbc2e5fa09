"""Ground-truth checkers for media-world clips, rendered or generated.

Impacts are found in each modality independently (the object's lowest points in the video, onsets
in the audio) and matched in time; the object's class is read from its colour (by a vote of the
moving pixels) and from its pitch. Both detectors and classifiers know only the world's fixed
vocabulary and frequency bands (:mod:`sava_synth.media_world`), never a clip's factors.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sava_synth.media_world import CLASSES, ONSET_BAND

_MOTION_THRESHOLD = 0.2  # summed |RGB - temporal median| below this is scenery
_ONSET_THRESHOLD = 1.0  # nats of band-energy rise within _ONSET_LAG that count as an onset
_ONSET_LAG = 0.016  # s
_ONSET_MIN_GAP = 0.1  # s between two reported onsets
_COLOUR_RADIUS = 0.3  # RGB distance within which a moving pixel votes for a class colour
_PITCH_TOLERANCE = 0.03  # relative half-width of the band around a class's pitch


def object_track(video: Tensor) -> Tensor:
    """Vertical centroid (pixels from the top, (F,), NaN where nothing moves) of the moving object.

    ``video`` (F, 3, H, W) in [0, 1]. Moving pixels differ from the per-pixel temporal median (the
    scenery: background, texture and static objects) by more than a fixed colour distance.
    """
    diff = (video - video.median(dim=0).values).abs().sum(1)  # (F, H, W)
    weight = (diff - _MOTION_THRESHOLD).clamp(min=0)
    rows = torch.arange(video.shape[-2], dtype=video.dtype).view(1, -1, 1) + 0.5
    mass = weight.sum((1, 2))
    centroid = (weight * rows).sum((1, 2)) / mass.clamp(min=1e-8)
    return torch.where(mass > 0.5, centroid, torch.full_like(centroid, math.nan))


def detect_visual_events(video: Tensor, fps: float) -> list[float]:
    """Impact times in seconds, sorted, from a video (F, 3, H, W) in [0, 1] at ``fps`` frames/s.

    An impact is a lowest point of the moving object's track (:func:`object_track`) that lies in
    the lower part of its range (within 40 % of the frame height of its lowest point); its time is
    refined between frames by fitting a symmetric V to the frame and its two neighbours. Impacts in
    the first or last frame, and impacts less than two frames apart, cannot be resolved.
    """
    y = object_track(video).tolist()
    valid = [v for v in y if not math.isnan(v)]
    if not valid:
        return []
    floor = max(valid) - 0.4 * video.shape[-2]
    events = []
    for k in range(1, len(y) - 1):
        prev, here, nxt = y[k - 1], y[k], y[k + 1]
        if any(math.isnan(v) for v in (prev, here, nxt)) or here < floor:
            continue
        if here > prev and here >= nxt:  # a plateau counts once, at its first frame
            shift = (nxt - prev) / (2 * (here - min(prev, nxt)))
            events.append((k + max(-0.5, min(0.5, shift))) / fps)
    return events


def band_energy(audio: Tensor, sample_rate: int, band: tuple[float, float] = ONSET_BAND,
                hop_s: float = 0.002, window_s: float = 0.032) -> tuple[Tensor, Tensor]:
    """Energy in ``band`` (Hz) of the channel mean of ``audio`` (C, S), per STFT frame.

    Returns (energy (T,), frame centre times (T,) in seconds).
    """
    mono = audio.double().mean(0)
    hop = max(1, round(hop_s * sample_rate))
    n_fft = 2 ** math.ceil(math.log2(window_s * sample_rate))
    spec = torch.stft(mono, n_fft, hop, window=torch.hann_window(n_fft, dtype=mono.dtype),
                      center=True, return_complex=True)
    freqs = torch.fft.rfftfreq(n_fft, 1 / sample_rate)
    keep = (freqs >= band[0]) & (freqs <= band[1])
    energy = spec[keep].abs().pow(2).sum(0)
    return energy, torch.arange(energy.shape[0], dtype=torch.float64) * hop / sample_rate


def detect_audio_events(audio: Tensor, sample_rate: int) -> list[float]:
    """Impact onset times in seconds, sorted, from ``audio`` (C, S) in [-1, 1] at ``sample_rate`` Hz.

    The onset function is the rise over 16 ms of log(band energy + its median over the clip), with
    the energy of :data:`ONSET_BAND` (180-2200 Hz) in 32 ms windows every 2 ms. The median is the
    steady background (wind), so only sounds well above it count and the wind's gusts, far slower
    than 16 ms, do not; the band excludes the hum (< 120 Hz) and the off-screen chirps (> 2.6 kHz),
    so neither is reported. Peaks rising by more than 1 nat (and at least 100 ms apart) are
    onsets, reported at the middle of the rise.
    """
    energy, times = band_energy(audio, sample_rate)
    if energy.max() <= 0:
        return []
    log_e = torch.log(energy + energy.median() + 1e-3 * energy.max())
    hop = float(times[1] - times[0]) if len(times) > 1 else 1.0
    lag = max(1, round(_ONSET_LAG / hop))
    rise = torch.zeros_like(log_e)
    rise[lag:] = log_e[lag:] - log_e[:-lag]
    radius = max(1, round(_ONSET_MIN_GAP / hop))
    local_max = torch.nn.functional.max_pool1d(rise.view(1, 1, -1), 2 * radius + 1, 1, radius).view(-1)
    peaks = torch.nonzero((rise >= local_max) & (rise > _ONSET_THRESHOLD)).view(-1).tolist()
    events: list[float] = []
    for i in peaks:
        t = float(times[i]) - lag * hop / 2
        if not events or t - events[-1] >= _ONSET_MIN_GAP:
            events.append(t)
    return events


def match_events(pred: list[float], true: list[float], tolerance_s: float) -> dict[str, float]:
    """Match predicted to true event times (s) one-to-one, closest pairs first, within ``tolerance_s``.

    Returns precision, recall, f1 (an empty list against an empty list scores 1, against a
    non-empty one 0), ``offset_ms``: the mean absolute offset of matched pairs in milliseconds (NaN
    without matches), and the counts ``n_pred``, ``n_true``, ``n_matched``.
    """
    pairs = sorted((abs(p - t), i, j) for i, p in enumerate(pred) for j, t in enumerate(true)
                   if abs(p - t) <= tolerance_s)
    used_p, used_t, offsets = set(), set(), []
    for d, i, j in pairs:
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            offsets.append(d)
    n = len(offsets)
    precision = n / len(pred) if pred else float(not true)
    recall = n / len(true) if true else float(not pred)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "offset_ms": 1000 * sum(offsets) / n if n else math.nan,
        "n_pred": float(len(pred)),
        "n_true": float(len(true)),
        "n_matched": float(n),
    }


def classify_video(video: Tensor, n_classes: int = len(CLASSES)) -> int:
    """The object class seen in ``video`` (F, 3, H, W) in [0, 1]: among the moving pixels, each
    within :data:`_COLOUR_RADIUS` of a class colour (among the first ``n_classes``) votes for the
    nearest; the class with most votes wins (without votes, the class nearest to the median colour
    of the moving pixels). Votes rather than one median colour, so that flickering scenery in a
    generated video, which also counts as moving, does not drag the colour off the object's."""
    diff = (video - video.median(dim=0).values).abs().sum(1)  # (F, H, W)
    moving = video.permute(0, 2, 3, 1)[diff > _MOTION_THRESHOLD]  # (P, 3)
    if moving.shape[0] == 0:
        moving = video.permute(0, 2, 3, 1).reshape(-1, 3)
    prototypes = torch.tensor([c.colour for c in CLASSES[:n_classes]], dtype=video.dtype)
    distance = torch.cdist(moving, prototypes)  # (P, n_classes)
    nearest = distance.argmin(1)[distance.min(1).values < _COLOUR_RADIUS]
    if nearest.numel():
        return int(torch.bincount(nearest, minlength=n_classes).argmax())
    colour = moving.median(dim=0).values
    return int((prototypes - colour).norm(dim=1).argmin())


def classify_audio(audio: Tensor, sample_rate: int, n_classes: int = len(CLASSES)) -> int:
    """The object class heard in ``audio`` (C, S) in [-1, 1] at ``sample_rate`` Hz: the class (among
    the first ``n_classes``) whose pitch band (+-3 %) stands highest above the median power of
    :data:`ONSET_BAND` in the clip's power spectrum. Impact tones put most of their energy in their
    fundamental; wind is broadband, and hum and chirps lie outside the band."""
    mono = audio.double().mean(0)
    power = torch.fft.rfft(mono * torch.hann_window(mono.shape[0], dtype=mono.dtype)).abs().pow(2)
    freqs = torch.fft.rfftfreq(mono.shape[0], 1 / sample_rate)
    floor = power[(freqs >= ONSET_BAND[0]) & (freqs <= ONSET_BAND[1])].median() + 1e-12
    scores = [power[(freqs - c.pitch).abs() <= _PITCH_TOLERANCE * c.pitch].max() / floor
              for c in CLASSES[:n_classes]]
    return int(torch.stack(scores).argmax())
