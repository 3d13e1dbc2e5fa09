"""Where real components find their weights, without silent downloads or hangs, and the offline
tokenizers of their tiny presets."""

from __future__ import annotations

import time

import pytest

from sava_core.errors import SavaError
from sava_core.pretrained import locate, tiny_tokenizer

SETTING = "model.video_backbone.params.pretrained"


def test_a_missing_local_path_names_the_setting(tmp_path):
    with pytest.raises(SavaError, match=f"{SETTING}: local path .*nope does not exist"):
        locate(str(tmp_path / "nope"), SETTING)
    (tmp_path / "pipe").mkdir()
    with pytest.raises(SavaError, match="has no model_index.json"):
        locate(str(tmp_path / "pipe"), SETTING, must_contain="model_index.json")
    assert locate(str(tmp_path / "pipe"), SETTING) == str(tmp_path / "pipe")


def test_a_hub_id_offline_fails_fast_with_the_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.perf_counter()
    with pytest.raises(SavaError, match=f"{SETTING}: hub id 'someone/some-model' is not in the local hub cache"):
        locate("someone/some-model", SETTING)
    assert time.perf_counter() - start < 5


def test_an_invalid_name_is_neither_a_path_nor_a_hub_id(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(SavaError, match="neither an existing local path nor a valid hub id"):
        locate("not a//valid id", SETTING)


@pytest.mark.parametrize("family", ["t5", "roberta", "gpt2", "gemma", "clip"])
def test_tiny_tokenizers_are_deterministic_and_round_trip(family):
    a, b = tiny_tokenizer(family), tiny_tokenizer(family)
    text = "a red ball bounces twice"
    ids = a(text)["input_ids"]
    assert ids == b(text)["input_ids"] and len(ids) > 1
    assert a.decode(ids, skip_special_tokens=True).replace(" ", "") == text.replace(" ", "")
    padded = a(["a dog", text], padding="max_length", max_length=24, truncation=True)["input_ids"]
    assert all(len(row) == 24 for row in padded)
