"""Compression passes and the pass manager; `load_all()` registers every pass once."""

from __future__ import annotations

import importlib

# One module per pass, in the order `dlcc passes` lists them.
_MODULES = (
    "sensitivity",
    "prune",
    "filters",
    "lowrank",
    "kmeans",
    "quantize",
    "equalize",
    "refit",
    "biascorrect",
    "huffman",
    "finetune",
    "surgery",
)


def load_all() -> None:
    """Import every pass module (registration happens on import)."""
    for name in _MODULES:
        importlib.import_module(f"{__name__}.{name}")
