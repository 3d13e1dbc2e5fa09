"""Progress on the loops a user waits for: a bar on a terminal, plain periodic lines elsewhere,
nothing with --quiet."""

from __future__ import annotations

import io

from conftest import REPO, TINY, run_cli
from sava_core.progress import progress, set_quiet


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal(monkeypatch):
    monkeypatch.setenv("SAVA_PROGRESS_SECONDS", "0")
    out = io.StringIO()
    with progress("align", 4, stream=out) as bar:
        for _ in range(4):
            bar.advance(loss=0.5)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("align: 1/4 steps (25%), ") and "left" in lines[0] and lines[0].endswith("loss 0.5")
    assert lines[-1].startswith("align: 4/4 steps (100%)") and lines[-1].endswith("(done)")
    assert len(lines) == 4  # one per step here (every 0 s), the last one once


def test_a_bar_on_a_terminal_and_nothing_when_quiet():
    tty = Terminal()
    with progress("encoding train", 3, unit="clip", stream=tty) as bar:
        bar.advance(3)
    assert "encoding train" in tty.getvalue() and "3/3" in tty.getvalue()
    quiet = io.StringIO()
    set_quiet(True)
    try:
        with progress("align", 2, stream=quiet) as bar:
            bar.advance(2)
    finally:
        set_quiet(False)
    assert quiet.getvalue() == "" and bar.done == 2


def test_a_run_reports_its_phases_unless_quiet(tmp_path):
    args = ["run", "recipes/align_quickstart.yaml", *TINY, "variants={one: []}"]
    loud = run_cli(*args, "--out", str(tmp_path / "a"), cwd=REPO)
    assert loud.returncode == 0, loud.stderr
    assert "align: 30/30 steps (100%)" in loud.stderr and "projector: 20/20 steps (100%)" in loud.stderr
    quiet = run_cli("--quiet", *args, "--out", str(tmp_path / "b"), cwd=REPO)
    assert quiet.returncode == 0 and "steps (" not in quiet.stderr
