"""The shared encoder's architectures: one class each, in one registry (``ARCHITECTURES``).

A Siamese network is a framework, not a particular network: what is fixed is the contract
(one shared encoder maps a text to a vector, the score is exp(-Σ|a - b|)), not the network
between the character vectors and the vector. Every architecture starts from the same frozen
(or fine-tuned) character vectors, the layer ``EMBEDDING_LAYER``, and says how to compose
them into one vector, in three forms that must agree within ``encoder.EXPORT_TOLERANCE``:

* ``build``: the Keras layers (what is trained, saved and rebuilt, ``model.build_encoder``);
* ``forward``: the same function from the same weights, as training computes it (by default
  the Keras model itself; the BiLSTM has a faster one on CPUs);
* ``onnx``: the same function as ONNX operators, which is what encodes documents and queries
  (``export.py``), so that searching never imports TensorFlow.

Their sizes are settings (``settings()``), written into config.json's ``encoder`` beside
``architecture`` (the recipe's BiLSTM writes no ``architecture`` key, so every model saved
before there was a choice keeps its fingerprint). A new architecture is a frozen dataclass
subclassing ``Architecture`` in a module of this package, added to ``ARCHITECTURES``; the
CLI's ``--architecture`` choices and the contract tests come from the registry.

This module, and importing each architecture's module, loads neither Keras nor ONNX: a model
directory is read without them. Their methods import what they need.
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

EMBEDDING_LAYER = "char_embedding"
"""The Keras layer holding the character vectors, whatever the architecture."""


@dataclass(frozen=True)
class Architecture:
    """How one family of encoders composes character vectors into a vector. Subclasses are
    frozen dataclasses whose fields are positive integers or tuples of them (the sizes)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    """One line for ``--help`` and the docs: what it is and why one would choose it."""
    masks_padding: ClassVar[bool] = True
    """Whether the embedding layer passes Keras's padding mask on (recurrent layers read it)."""

    @property
    def output_dim(self) -> int:
        raise NotImplementedError

    def describe(self, embedding_dim: int) -> str:
        """The network in one line, as ``siamsearch info`` shows it."""
        raise NotImplementedError

    def build(self, ids, embedded, dropout: float):
        """Keras: the (batch, dim) vector from the int ids (batch, length) and their character
        vectors (batch, length, embedding_dim)."""
        raise NotImplementedError

    def forward(self, model, ids, training: bool = False):
        """``model(ids, training=training)``, as training computes it; override where a
        faster computation of the same function from the same weights exists."""
        return model(ids, training=training)

    def onnx(self, model, to_numpy) -> tuple[list, dict]:
        """ONNX nodes and constants from the graph's inputs ``export.INPUT`` (ids) and
        ``export.SHARED`` (the character vectors, the mask, the lengths) to ``export.OUTPUT``."""
        raise NotImplementedError

    def settings(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_settings(cls, settings: dict) -> Architecture:
        """Strictly typed: ValueError on an unknown setting or one that is not a positive
        integer (or a non-empty list of them where the default is a tuple; one integer
        there is a list of one)."""
        known = {f.name: f for f in fields(cls)}
        unknown = set(settings) - set(known)
        if unknown:
            raise ValueError(f"unknown {cls.name} settings {sorted(unknown)} (it has {', '.join(known) or 'none'})")
        values = {}
        hints = typing.get_type_hints(cls)
        for name, value in settings.items():
            is_tuple = typing.get_origin(hints[name]) is tuple
            items = value if is_tuple and isinstance(value, (list, tuple)) else [value]
            if not items or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items):
                kind = "a non-empty list of positive integers" if is_tuple else "a positive integer"
                raise ValueError(f"{cls.name} setting {name} must be {kind}, not {value!r}")
            values[name] = tuple(items) if is_tuple else value
        return cls(**values)


from .bilstm import BiLSTM  # noqa: E402  (they subclass Architecture, defined above)
from .cnn import CNN  # noqa: E402

ARCHITECTURES: dict[str, type[Architecture]] = {cls.name: cls for cls in (BiLSTM, CNN)}
"""Every architecture by name; the first is the recipe's and the default."""
DEFAULT_ARCHITECTURE = "bilstm"


def architecture_named(name: str, settings: dict | None = None) -> Architecture:
    """The architecture ``name`` with ``settings`` (the rest its defaults); ValueError naming
    the choices for an unknown name, or the setting for a bad one."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name].from_settings(dict(settings or {}))


@dataclass(frozen=True)
class EncoderConfig:
    """Everything needed to rebuild the encoder (saved as config.json's ``encoder``)."""

    vocab_size: int
    embedding_dim: int = 300
    architecture: Architecture = BiLSTM()
    dropout: float = 0.5
    max_length: int = 100

    @property
    def output_dim(self) -> int:
        return self.architecture.output_dim

    def to_dict(self) -> dict:
        named = {} if self.architecture.name == DEFAULT_ARCHITECTURE else {"architecture": self.architecture.name}
        return {"vocab_size": self.vocab_size, "embedding_dim": self.embedding_dim, **named,
                **self.architecture.settings(), "dropout": self.dropout, "max_length": self.max_length}

    @classmethod
    def from_dict(cls, d: dict) -> EncoderConfig:
        """Strictly typed: raises ValueError on unknown keys or wrong types."""
        if not isinstance(d, dict):
            raise ValueError(f"encoder settings must be a mapping, not {d!r}")
        common = {"vocab_size", "embedding_dim", "dropout", "max_length"}
        arch = architecture_named(d.get("architecture", DEFAULT_ARCHITECTURE),
                            {k: v for k, v in d.items() if k not in common | {"architecture"}})
        config = cls(**{k: v for k, v in d.items() if k in common}, architecture=arch)
        ints = (config.vocab_size, config.embedding_dim, config.max_length)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in ints):
            raise ValueError("encoder sizes must be positive integers")
        if not (isinstance(config.dropout, (int, float)) and 0 <= config.dropout < 1):
            raise ValueError("dropout must be in [0, 1)")
        return config
