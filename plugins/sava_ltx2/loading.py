"""Finding LTX-2 weights: a local pipeline directory or a hub id, with errors that name the setting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sava_core.errors import SavaError
from sava_core.pretrained import locate

#: Components an LTX2Pipeline directory must name in its model_index.json.
PIPELINE_PARTS = ("scheduler", "vae", "audio_vae", "text_encoder", "tokenizer", "connectors", "transformer", "vocoder")


def pipeline_dir(pretrained: str, setting: str) -> Path:
    """The local LTX2Pipeline directory for ``pretrained`` (``setting`` is the recipe key of it)."""
    root = Path(locate(pretrained, setting, must_contain="model_index.json",
                       allow_patterns=["model_index.json", *(f"{part}/*" for part in PIPELINE_PARTS)]))
    index_file = root / "model_index.json"
    if not index_file.is_file():
        raise SavaError(f"{setting}: {pretrained} has no model_index.json; point it at an LTX2Pipeline in the "
                        "diffusers layout (e.g. Lightricks/LTX-2)")
    index = json.loads(index_file.read_text())
    missing = [part for part in PIPELINE_PARTS if not (isinstance(index.get(part), list) and index[part][0])]
    if missing:
        raise SavaError(f"{setting}: {root} is a {index.get('_class_name', 'pipeline')} without {', '.join(missing)}; "
                        "point it at an LTX-2 pipeline (e.g. Lightricks/LTX-2)")
    return root


def subfolder_dir(root: Path, subfolder: str, setting: str) -> Path:
    """``root / subfolder``, which must hold a config.json (``setting`` names the subfolder key)."""
    folder = root / subfolder
    if not (folder / "config.json").is_file():
        raise SavaError(f"{setting}: {root} has no {subfolder}/config.json; set it to the folder of this model "
                        "inside the pipeline directory")
    return folder


def class_in(folder: Path, module: Any, setting: str) -> Any:
    """The class named by ``folder/config.json``'s ``_class_name``, looked up in ``module``."""
    name = json.loads((folder / "config.json").read_text()).get("_class_name", "")
    if not hasattr(module, name):
        raise SavaError(f"{setting}: {folder} holds a {name or 'model'} config, not one of {module.__name__}'s classes")
    return getattr(module, name)
