"""Shared fixtures: small models trained once per session, and the real data beside the repo."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BQ = SHARED / "bq"


@pytest.fixture(scope="session", autouse=True)
def teacher_cache(tmp_path_factory) -> Path:
    """Teacher vectors go to a folder of this test session, never to the user's ~/.cache (and
    subprocesses started by tests inherit it)."""
    import os

    path = tmp_path_factory.mktemp("teacher-cache")
    os.environ["SIAMSEARCH_CACHE"] = str(path)
    return path


def shared_file(relative: str) -> Path:
    """A file of ../shared/data, or skip: a user's clone has no ../shared (research-only data)."""
    path = SHARED / relative
    if not path.is_file():
        pytest.skip(f"needs ../shared/data/{relative} (research-only data kept beside the repo, not shipped)")
    return path


class CharTeacher:
    """A stand-in teacher: unit-length bags of hashed characters, counting what it encodes."""

    name, version, dim = "chars", "1", 32

    def __init__(self):
        self.encoded: list[str] = []

    def encode(self, texts):
        self.encoded += list(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for c in t:
                out[i, zlib.crc32(c.encode()) % self.dim] += 1
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def keras_scores(encoder, left: list[str], right: list[str]) -> np.ndarray:
    """What the trained Keras Siamese network itself predicts for each pair."""
    from siamsearch.text import pad

    ids = lambda texts: pad([encoder.vocab.ids(t, encoder.config.max_length) for t in texts])  # noqa: E731
    return np.asarray(encoder.siamese_model().predict([ids(left), ids(right)], verbose=0)).reshape(-1)


def evaluate_json(encoder, rows: list[tuple[str, str, float]], tmp_path: Path) -> tuple[dict, np.ndarray, Path]:
    """``siamsearch evaluate --json`` on ``rows`` written as a pair file, with ``encoder`` saved
    as the model: its report, the encoder's own score of each row, and the pair file."""
    import json

    from click.testing import CliRunner

    from siamsearch.cli import main

    (tmp_path / "pairs.tsv").write_text("".join(f"{a}\t{b}\t{y}\n" for a, b, y in rows), encoding="utf-8")
    encoder.save(tmp_path / "m")
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "pairs.tsv"), "--model", str(tmp_path / "m"),
                                       "--json"])
    assert result.exit_code == 0, result.output
    scores = np.array([encoder.similarity(a, b) for a, b, _ in rows])
    return json.loads(result.stdout.splitlines()[-1]), scores, tmp_path / "pairs.tsv"


@pytest.fixture(scope="session")
def sample_encoder():
    """Trained briefly on the bundled sample pairs: enough structure for ranking tests."""
    from siamsearch import TrainConfig, read_pairs, train
    from siamsearch.demo import SAMPLE_PAIRS

    return train(read_pairs(SAMPLE_PAIRS), config=TrainConfig(epochs=3, seed=1))


@pytest.fixture(scope="session")
def architecture_encoder(sample_encoder):
    """``get(name)``: a model of each architecture of the registry, trained as ``sample_encoder``
    is (the BiLSTM's is ``sample_encoder`` itself), each once a session."""
    from siamsearch import TrainConfig, read_pairs, train
    from siamsearch.architectures import DEFAULT_ARCHITECTURE
    from siamsearch.demo import SAMPLE_PAIRS

    trained = {DEFAULT_ARCHITECTURE: sample_encoder}

    def get(name: str):
        if name not in trained:
            trained[name] = train(read_pairs(SAMPLE_PAIRS), config=TrainConfig(epochs=3, seed=1, architecture=name))
        return trained[name]

    return get


@pytest.fixture(scope="session")
def sample_faq():
    from siamsearch import read_corpus
    from siamsearch.demo import SAMPLE_FAQ

    return read_corpus(SAMPLE_FAQ, text_column="question")


@pytest.fixture(scope="session")
def bq_pairs():
    from siamsearch import read_pairs

    return read_pairs(shared_file("bq/train.tsv")), read_pairs(shared_file("bq/dev.tsv"))


@pytest.fixture(scope="session")
def bq_encoder(bq_pairs):
    """A small model on a 4,000-pair slice of BQ train, validated on 1,000 dev pairs."""
    from siamsearch import TrainConfig, train

    train_pairs, dev = bq_pairs
    return train(train_pairs.subset(slice(4000)), dev.subset(slice(1000)), TrainConfig(epochs=2, seed=0))


@pytest.fixture(scope="session")
def bq_sentences(bq_pairs) -> list[str]:
    """Every distinct sentence of BQ train (about 23,000)."""
    train_pairs, _ = bq_pairs
    return sorted(set(train_pairs.left) | set(train_pairs.right))
