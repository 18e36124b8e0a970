"""The encoder's architecture as data: what ``model.py`` builds in Keras and ``export.py``
writes as ONNX, kept free of both so that a model directory can be read without them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

EMBEDDING_LAYER = "char_embedding"
LSTM_LAYERS = ("bilstm_1", "bilstm_2")
"""The Keras layer names that training, export and the fast forward pass look up."""


@dataclass(frozen=True)
class EncoderConfig:
    """Everything needed to rebuild the encoder (saved as config.json's ``encoder``)."""

    vocab_size: int
    embedding_dim: int = 300
    lstm_units: tuple[int, int] = (128, 32)
    dropout: float = 0.5
    max_length: int = 100

    @property
    def output_dim(self) -> int:
        return 2 * self.lstm_units[1]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lstm_units"] = list(self.lstm_units)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EncoderConfig:
        """Strictly typed: raises ValueError on unknown keys or wrong types."""
        known = {f.name for f in fields(cls)}
        if not isinstance(d, dict) or set(d) - known:
            raise ValueError(f"unknown encoder settings {sorted(set(d) - known) if isinstance(d, dict) else d!r}")
        config = cls(**{**d, "lstm_units": tuple(d.get("lstm_units", (128, 32)))})
        ints = (config.vocab_size, config.embedding_dim, config.max_length, *config.lstm_units)
        if len(config.lstm_units) != 2 or not all(isinstance(v, int) and v > 0 for v in ints):
            raise ValueError("encoder sizes must be positive integers")
        if not (isinstance(config.dropout, (int, float)) and 0 <= config.dropout < 1):
            raise ValueError("dropout must be in [0, 1)")
        return config
