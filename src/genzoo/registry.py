"""Registries: kind name → the class implementing one part of a generator.

A run is three parts chosen independently — a tokenizer, a backbone (`model`) and a family — each
named by a `kind`. Every part class carries `Config`, the typed dataclass of its own settings
(with a class attribute `kind`), and is built as `PartClass.from_config(cfg)` or `PartClass(cfg)`.
Entries are module paths, imported on first use, so listing the kinds stays cheap and a part's
heavy dependencies load only when that part is used. Adding a part is one file plus one line in
the table of its package (or `REGISTRY.register(...)` at run time, as tests do).
"""

from __future__ import annotations

import importlib
from typing import Any

from genzoo.errors import GenzooError


class Registry:
    def __init__(self, part: str, entries: dict[str, str]):
        self.part = part  # "tokenizer" | "model" | "family": the config section it fills
        self._entries: dict[str, str | type] = dict(entries)

    def register(self, kind: str, cls: type | str) -> None:
        """Add (or replace) a kind: a class, or "module:Class" to import lazily."""
        self._entries[kind] = cls

    def unregister(self, kind: str) -> None:
        self._entries.pop(kind, None)

    def kinds(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, kind: str) -> bool:
        return kind in self._entries

    def get(self, kind: str) -> type:
        """The part class of `kind` (imported on first use)."""
        if kind not in self._entries:
            raise GenzooError(
                f"unknown {self.part} kind {kind!r}; choose one of: {', '.join(self.kinds())} "
                f"(set {self.part}.kind=...)"
            )
        entry = self._entries[kind]
        if isinstance(entry, str):
            module, _, name = entry.partition(":")
            entry = getattr(importlib.import_module(module), name)
            self._entries[kind] = entry
        return entry

    def config_class(self, kind: str) -> type:
        cls = self.get(kind).Config
        if getattr(cls, "kind", None) != kind:
            cls.kind = kind  # a config class serves the kind it is registered under
        return cls

    def default_config(self, kind: str) -> Any:
        return self.config_class(kind)()

    def kind_of(self, cfg: Any) -> str:
        kind = getattr(type(cfg), "kind", None)
        if kind is None:  # a config class not yet seen through this registry
            kind = next((k for k in self.kinds() if self.get(k).Config is type(cfg)), None)
            if kind is None:
                raise GenzooError(f"{type(cfg).__name__} is not a registered {self.part} config")
            type(cfg).kind = kind
        return kind

    def build(self, cfg: Any, **context: Any) -> Any:
        """The part for config section `cfg` (its class decides from `cfg.kind`)."""
        cls = self.get(self.kind_of(cfg))
        if hasattr(cls, "from_config"):
            import inspect

            accepted = inspect.signature(cls.from_config).parameters
            return cls.from_config(cfg, **{k: v for k, v in context.items() if k in accepted})
        return cls(cfg)


def _tables() -> dict[str, Registry]:
    from genzoo.backbones import BACKBONES
    from genzoo.families import FAMILIES
    from genzoo.tokenizers import TOKENIZERS

    return {"tokenizer": TOKENIZERS, "model": BACKBONES, "family": FAMILIES}


def registry(part: str) -> Registry:
    """The registry filling config section `part` ("tokenizer", "model" or "family")."""
    return _tables()[part]


TAGGED_SECTIONS = ("tokenizer", "model", "family")
