"""Named presets: each fills the tokenizer, model and family sections of a RunConfig.

`PRESET_TABLES` lists one module per family of presets; each module defines `PRESETS` (names)
and `preset(name) -> RunConfig`. Adding a model family's presets is one file and one line here.
"""

from __future__ import annotations

import importlib

from genzoo.config import RunConfig
from genzoo.errors import GenzooError

PRESET_TABLES = [
    "genzoo.zoo.presets_dit",
    "genzoo.zoo.presets_tokens",
    "genzoo.zoo.presets_masked",
    "genzoo.zoo.presets_mar",
]


def _tables():
    return [importlib.import_module(m) for m in PRESET_TABLES]


def preset_names() -> list[str]:
    return [name for table in _tables() for name in table.PRESETS]


def preset(name: str) -> RunConfig:
    """A fresh RunConfig for a preset name (case-insensitive; `DiT-XL/2` is accepted too)."""
    key = name.lower().replace("/", "")
    for table in _tables():
        if key in table.PRESETS:
            return table.preset(key)
    raise GenzooError(f"unknown preset {name!r}; choose one of: {', '.join(preset_names())}")


def __getattr__(name: str):
    if name == "PRESETS":  # computed on use, so every table's names are included
        return preset_names()
    raise AttributeError(name)
