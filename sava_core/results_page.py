"""``results.html``: a run's comparison to look at, beside ``results.md``.

One static page that opens offline (no script, no CDN; every media file by a relative path): the
comparison table (mean ± std over seeds, and the collapse flags), one row per test
prompt with each variant's clip (video with its sound, playable in the page), its figure
(keyframes over the spectrogram), the prompt and the clip's own checks, then the plots. Videos load nothing until
played (``preload="none"``) and figures load when scrolled to (``loading="lazy"``), so a grid of
hundreds of clips stays light. A variant's clips are those of its lowest seed.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sava_core.io import atomic_write_text

PAGE = "results.html"

#: Per-clip checks shown under a clip, in this order, with how to print them.
CHECKS = (("sync_error_ms", "sync error {:.0f} ms"), ("event_f1", "event F1 {:.2f}"),
          ("class_consistency", "classes seen = heard: {}"), ("video_class_acc", "video class right: {}"),
          ("audio_class_acc", "audio class right: {}"), ("count_acc", "impact count right: {}"))

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5rem; }
.wide { overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.5rem; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.flag { color: #a00; }
.plots img { width: 320px; margin: 0 0.5rem 0.5rem 0; }
.clip video, .clip img { display: block; width: 280px; margin-bottom: 0.3rem; }
.prompt { max-width: 18rem; }
.checks { font-size: 0.85em; color: #444; margin: 0; padding-left: 1rem; }
"""


def _url(target: Path, page_dir: Path) -> str:
    """``target`` relative to the page's folder, as a URL path."""
    return quote(Path(os.path.relpath(target.resolve(), page_dir.resolve())).as_posix())


def _number(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.3f}" if value == 0 or 1e-3 <= abs(value) < 1e5 else f"{value:.3g}"
    return html.escape(str(value))


def _check_lines(checks: Mapping[str, Any]) -> list[str]:
    lines = []
    for key, text in CHECKS:
        if key in checks:
            value = checks[key]
            if text.endswith(": {}"):
                value = "yes" if value >= 0.5 else "no"
            lines.append(text.format(value))
    return lines


def mean_and_spread(summary_row: Mapping[str, Any], column: str, fmt: Any = None) -> str:
    """``mean ± std`` of one summary cell, the mean alone for a single run (no spread to show), ``n/a``
    when no run has the value."""
    fmt = fmt or _number
    mean, std = summary_row[column]
    if math.isnan(mean):
        return "n/a"
    return fmt(mean) if summary_row["n"] < 2 else f"{fmt(mean)} ± {fmt(std)}"


def _table(summary: list[dict[str, Any]], columns: list[str], flags: Mapping[str, str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["variant", "n", *columns])
    head += "<th>flags</th>" if flags else ""
    rows = []
    for s in summary:
        cells = [f"<td>{html.escape(s['variant'])}</td>", f"<td class=num>{s['n']}</td>"]
        cells += [f"<td class=num>{mean_and_spread(s, c, _number)}</td>" for c in columns]
        if flags:
            cells.append(f"<td class=flag>{html.escape(flags.get(s['variant'], ''))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _samples(cell: Path) -> dict[int, dict[str, Any]]:
    """index -> {prompt, checks, mp4, png} of the samples a cell saved (``samples/prompts.json``)."""
    listing = cell / "samples" / "prompts.json"
    if not listing.is_file():
        return {}
    out = {}
    for entry in json.loads(listing.read_text()):
        mp4 = cell / "samples" / f"sample-{entry['index']:03d}.mp4"
        if mp4.is_file():
            out[entry["index"]] = {**entry, "mp4": mp4, "png": mp4.with_suffix(".png")}
    return out


def _clip_cell(sample: dict[str, Any] | None, page_dir: Path) -> str:
    if sample is None:
        return "<td>-</td>"
    parts = [f'<video controls preload="none" src="{_url(sample["mp4"], page_dir)}"></video>']
    if sample["png"].is_file():
        parts.append(f'<img loading="lazy" alt="figure" src="{_url(sample["png"], page_dir)}">')
    lines = _check_lines(sample.get("checks") or {})
    if lines:
        parts.append("<ul class=checks>" + "".join(f"<li>{html.escape(t)}</li>" for t in lines) + "</ul>")
    return "<td class=clip>" + "".join(parts) + "</td>"


def write_results_page(out: Path, title: str, summary: list[dict[str, Any]], columns: list[str],
                       flags: Mapping[str, str], cells: Mapping[tuple[str, int], Path], note: str = "") -> Path:
    """Write ``out/results.html`` (atomically) and return its path. ``summary``: what
    :func:`sava_core.rundir.summarise` gives; ``cells``: (variant, seed) -> that run's cell directory
    (in another run directory for merged shards); plots are read from ``out/plots/``."""
    variants = [s["variant"] for s in summary]
    first_seed: dict[str, Path] = {}
    for (variant, seed), folder in sorted(cells.items(), key=lambda kv: kv[0][1]):
        first_seed.setdefault(variant, folder)
    samples = {v: _samples(first_seed[v]) for v in variants if v in first_seed}
    indices = sorted({i for s in samples.values() for i in s})
    body = [f"<h1>{html.escape(title)}</h1>"]
    if note:
        body.append(f"<p>{html.escape(note)}</p>")
    body.append("<div class=wide>" + _table(summary, columns, flags) + "</div>")
    if indices:
        shown = [v for v in variants if samples.get(v)]
        body.append("<h2>Clips</h2><p>Each variant's samples of its lowest seed; the checks are the clip's own.</p>")
        head = "<th>prompt</th>" + "".join(f"<th>{html.escape(v)}</th>" for v in shown)
        rows = []
        for i in indices:
            prompt = next(s[i]["prompt"] for s in samples.values() if i in s)
            cells_html = "".join(_clip_cell(samples[v].get(i), out) for v in shown)
            rows.append(f"<tr><td class=prompt>{i}: {html.escape(prompt)}</td>{cells_html}</tr>")
        body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    plots = sorted((out / "plots").glob("*.png")) if (out / "plots").is_dir() else []
    if plots:
        images = "".join(f'<img loading="lazy" alt="{html.escape(p.stem)}" src="{_url(p, out)}">' for p in plots)
        body.append(f"<details><summary>Plots</summary><div class=plots>{images}</div></details>")
    head = (f"<meta charset=utf-8><title>{html.escape(title)}</title><meta name=viewport "
            f"content='width=device-width'><link rel=icon href='data:,'><style>{_STYLE}</style>")
    page = f"<!doctype html>\n<html lang=en><head>{head}</head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    atomic_write_text(out / PAGE, page)
    return out / PAGE
