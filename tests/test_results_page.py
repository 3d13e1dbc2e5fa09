"""results.html: every run writes it, `sava report` writes it for merged shards, and it opens in a
real headless browser (Debian's chromium) with every variant's clips playable."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import REPO
from sava_core.runner import merge_runs

ARTIFACTS = Path(os.environ.get("SAVA_TEST_ARTIFACTS", REPO / "test-artifacts"))


def test_the_page_shows_each_variant_clip_by_clip_with_its_checks(tiny_quickstart):
    page = (tiny_quickstart / "results.html").read_text()
    assert "<script" not in page and "http://" not in page and "https://" not in page  # offline, static
    assert page.count("<video") == 4  # 2 variants x 2 saved samples
    assert 'src="runs/sava/seed-0/samples/sample-000.mp4"' in page and 'preload="none"' in page
    assert page.count('loading="lazy"') >= 4
    prompts = json.loads((tiny_quickstart / "runs" / "sava" / "seed-0" / "samples" / "prompts.json").read_text())
    assert "sync error" in page and "checks" in prompts[0] and "sync_error_ms" in prompts[0]["checks"]
    assert prompts[0]["prompt"].split(",")[0] in page


def test_a_merged_report_links_the_shards_clips(tiny_quickstart, tmp_path):
    shard = tmp_path / "elsewhere" / "shard"
    shutil.copytree(tiny_quickstart, shard)
    merge_runs([shard], tmp_path / "merged")
    page = (tmp_path / "merged" / "results.html").read_text()
    assert 'src="../elsewhere/shard/runs/sava/seed-0/samples/sample-000.mp4"' in page


def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("needs Debian's chromium and chromium-driver (apt install chromium chromium-driver; .ci/run "
                    "installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the test extra)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--mute-audio", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


PLAY_EVERY_VIDEO = """
const done = arguments[arguments.length - 1];
const videos = [...document.querySelectorAll('video')];
Promise.all(videos.map(v => new Promise(resolve => {
  const report = extra => resolve(Object.assign({src: v.currentSrc, state: v.readyState, width: v.videoWidth,
                                                 duration: v.duration, time: v.currentTime}, extra));
  v.muted = true;
  v.addEventListener('error', () => report({error: v.error ? v.error.code : 'unknown'}), {once: true});
  v.addEventListener('loadedmetadata', () => v.play().then(() => setTimeout(() => report({}), 300))
                                               .catch(e => report({error: String(e)})), {once: true});
  v.preload = 'auto';
  v.load();
}))).then(done);
"""


def test_the_page_opens_in_chromium_and_every_clip_plays(tiny_quickstart):
    browser = _browser()
    try:
        browser.set_script_timeout(60)
        browser.get((tiny_quickstart / "results.html").resolve().as_uri())
        videos = browser.execute_async_script(PLAY_EVERY_VIDEO)
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "results_html.png"))
    finally:
        browser.quit()
    assert errors == []
    assert len(videos) == 4
    for v in videos:
        assert "error" not in v, v
        assert v["width"] == 32 and v["duration"] == pytest.approx(2.0, abs=0.2) and v["time"] > 0, v
    assert (ARTIFACTS / "results_html.png").stat().st_size > 10_000


def test_tables_show_a_spread_only_where_there_are_several_runs():
    """One run has no spread to report: its cells are the value alone (not "± 0.000"), and the note
    under the table says so; several runs give mean ± sample std."""
    from sava_core.rundir import markdown_table, spread_note, summarise

    rows = [{"variant": "a", "seed": 0, "m": 1.0}, {"variant": "a", "seed": 1, "m": 3.0},
            {"variant": "b", "seed": 0, "m": 2.0}]
    table = markdown_table(summarise(rows, ["m"]), ["m"])
    assert "| a | 2 | 2.000 ± 1.414 |" in table and "| b | 1 | 2.000 |" in table
    assert "no spread" in spread_note([0]) and "sample standard deviation over seeds [0, 1]" in spread_note([0, 1])
