"""siamsearch: semantic search for short texts, with similarity learned from labelled pairs.

Names are imported on first use so that ``import siamsearch`` stays fast. Only ``train``
loads TensorFlow; ``Encoder`` and ``SearchIndex`` run on onnxruntime and FAISS.
"""

from .errors import (
    ConflictError,
    IndexDirectoryError,
    InputError,
    ModelDirectoryError,
    NotFoundError,
    SiamsearchError,
)
from .version import __version__

_LAZY = {
    "Encoder": "encoder",
    "SearchIndex": "search",
    "ShardedIndex": "shards",
    "Hit": "search",
    "Document": "search",
    "LiveIndex": "live",
    "train": "training",
    "TrainConfig": "training",
    "PRESETS": "training",
    "read_pairs": "data",
    "read_corpus": "data",
}

__all__ = ["ConflictError", "IndexDirectoryError", "InputError", "ModelDirectoryError", "NotFoundError",
           "SiamsearchError", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'siamsearch' has no attribute {name!r}")
