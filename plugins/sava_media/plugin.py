"""Registers the media components. Loaded through the `sava.plugins` entry point `media`."""

from sava_core.plugin import hookimpl

_DATASETS = "sava_media.datasets"
_PARAMS = "sava_media.params"


@hookimpl
def sava_register(registry) -> None:  # type: ignore[no-untyped-def]
    registry.register("dataset", "folder", f"{_DATASETS}:FolderDataset", params=f"{_PARAMS}:FolderParams",
                      summary="any folder of clips: a CSV or JSONL manifest of video (+ audio) paths, captions, splits")
    registry.register("dataset", "vggsound", f"{_DATASETS}:VGGSound", params=f"{_PARAMS}:VGGSoundParams",
                      summary="VGGSound: the official CSV (ytid, start, label, split) and a local folder of clips")
    registry.register("dataset", "audiocaps", f"{_DATASETS}:AudioCaps", params=f"{_PARAMS}:AudioCapsParams",
                      summary="AudioCaps: the official per-split CSVs and a local folder of clips")
