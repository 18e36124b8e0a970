import json
import shutil

import numpy as np
import pytest

from siamsearch import Encoder, model_folder
from siamsearch.errors import InputError, ModelDirectoryError
from siamsearch.scoring import exp_neg_l1

from .conftest import keras_scores

TEXTS = ["怎么退货", "退款多久到账", "我要投诉", "能开发票吗", "X"]


@pytest.fixture(scope="module")
def model_dir(sample_encoder, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "m"
    sample_encoder.save(path)
    return path


def test_model_directory_contents(model_dir, sample_encoder):
    names = {p.name for p in model_dir.iterdir()}
    assert names == {"config.json", "vocab.json", "encoder.onnx", "encoder.weights.h5", "history.json", "metrics.json"}
    config = json.loads((model_dir / "config.json").read_text())
    assert config["fingerprint"] == sample_encoder.fingerprint
    assert config["encoder"]["lstm_units"] == [128, 32] and config["encoder"]["embedding_dim"] == 300
    assert config["training"]["settings"]["epochs"] == 3 and config["training"]["optimizer"] == "Nadam"
    assert len(json.loads((model_dir / "history.json").read_text())) == 3


def test_round_trip_gives_identical_encodings(model_dir, sample_encoder):
    loaded = Encoder.load(model_dir)
    assert loaded.fingerprint == sample_encoder.fingerprint
    assert np.array_equal(loaded.encode(TEXTS), sample_encoder.encode(TEXTS))


def test_similarity_is_the_siamese_prediction(sample_encoder):
    left, right = TEXTS, TEXTS[1:] + TEXTS[:1]
    ours = [sample_encoder.similarity(a, b) for a, b in zip(left, right)]
    assert np.allclose(ours, keras_scores(sample_encoder, left, right), atol=1e-5, rtol=0)
    assert all(0 < s <= 1 for s in ours) and sample_encoder.similarity("退货", "退货") == 1.0


def test_onnx_encoder_equals_the_keras_encoder(sample_encoder):
    """Vectors come from the exported ONNX graph; Keras (what was trained) must agree within 1e-5."""
    from siamsearch.demo import SAMPLE_FAQ
    from siamsearch.text import pad

    texts = TEXTS + [line.split("\t")[1] for line in SAMPLE_FAQ.read_text(encoding="utf-8").splitlines()[1:]]
    texts.append("很长的句子" * 30)  # longer than max_length: cut the same way on both sides
    ids = pad([sample_encoder.vocab.ids(t, sample_encoder.config.max_length) for t in texts])
    keras_vectors = np.asarray(sample_encoder.keras_model().predict(ids, verbose=0))
    assert np.abs(sample_encoder.encode(texts) - keras_vectors).max() <= 1e-5


def test_encode_is_independent_of_batching_and_order(sample_encoder):
    whole = sample_encoder.encode(TEXTS)
    one_by_one = np.vstack([sample_encoder.encode([t]) for t in TEXTS])
    assert whole.shape == (5, 64) and whole.dtype == np.float32
    assert np.allclose(whole, one_by_one, atol=1e-6)
    assert np.allclose(exp_neg_l1(whole[0], whole[1]), sample_encoder.similarity(TEXTS[0], TEXTS[1]), atol=1e-6)


def test_encode_rejects_empty_text(sample_encoder):
    with pytest.raises(InputError, match="text #2 is empty"):
        sample_encoder.encode(["a", "  "])


def damage(model_dir, tmp_path, how):
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    how(bad)
    return bad


@pytest.mark.parametrize(
    "how, message",
    [
        (lambda d: (d / "vocab.json").unlink(), "vocab.json is missing"),
        (lambda d: (d / "encoder.weights.h5").unlink(), "encoder.weights.h5 is missing"),
        (lambda d: (d / "config.json").write_text("{not json"), "unreadable JSON"),
        (lambda d: (d / "encoder.weights.h5").write_bytes((d / "encoder.weights.h5").read_bytes()[:5000]),
         "encoder.weights.h5 does not match its checksum"),
        (lambda d: (d / "encoder.onnx").write_bytes(b"not a graph"), "encoder.onnx or the vocabulary do not match"),
        (lambda d: (d / "vocab.json").write_text(
            json.dumps({"chars": list(reversed(json.loads((d / "vocab.json").read_text())["chars"]))})),
         "do not match the fingerprint"),
        (lambda d: (d / "config.json").write_text(
            json.dumps({**json.loads((d / "config.json").read_text()), "format_version": 99})),
         "format version 99 is not supported"),
        (lambda d: (d / "config.json").write_text(json.dumps({"format": "something-else"})),
         "not a siamsearch model"),
    ],
)
def test_damaged_model_directories_are_refused(model_dir, tmp_path, how, message):
    with pytest.raises(ModelDirectoryError, match=message):
        Encoder.load(damage(model_dir, tmp_path, how))


def test_missing_model_directory(tmp_path):
    with pytest.raises(ModelDirectoryError, match="no such model directory"):
        Encoder.load(tmp_path / "nope")


def test_failed_save_leaves_existing_model_intact(model_dir, sample_encoder, tmp_path, monkeypatch):
    target = tmp_path / "m"
    shutil.copytree(model_dir, target)
    monkeypatch.setattr(sample_encoder, "keras_weights", None)  # fails halfway through writing
    with pytest.raises(TypeError):
        sample_encoder.save(target)
    assert Encoder.load(target).fingerprint == sample_encoder.fingerprint
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no staging directory left behind


def test_saving_over_an_existing_model_replaces_it_atomically(model_dir, sample_encoder, tmp_path):
    target = tmp_path / "m"
    shutil.copytree(model_dir, target)
    (target / "stale.txt").write_text("from the old model")
    sample_encoder.save(target)
    assert not (target / "stale.txt").exists() and Encoder.load(target).fingerprint == sample_encoder.fingerprint
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # the old directory is gone, nothing hidden left


def test_never_overwrites_a_folder_that_is_not_a_model(sample_encoder, tmp_path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    with pytest.raises(InputError, match="exists and is not a siamsearch model directory"):
        sample_encoder.save(target)
    assert [p.name for p in target.iterdir()] == ["thesis.tex"]


def test_never_overwrites_a_file(sample_encoder, tmp_path):
    (tmp_path / "a-file").write_text("mine")
    with pytest.raises(InputError, match="exists and is not a siamsearch model directory"):
        sample_encoder.save(tmp_path / "a-file")
    assert (tmp_path / "a-file").read_text() == "mine"


def test_an_empty_folder_is_fine(sample_encoder, tmp_path):
    (tmp_path / "empty").mkdir()
    sample_encoder.save(tmp_path / "empty")
    assert Encoder.load(tmp_path / "empty").fingerprint == sample_encoder.fingerprint


def test_write_links_the_files_the_fingerprint_fixes_for_the_same_model_only(model_dir, sample_encoder, tmp_path):
    same, other = tmp_path / "same", tmp_path / "other"
    same.mkdir(), other.mkdir()
    model_folder.write(sample_encoder, same, reuse=model_dir)
    for name in ("vocab.json", "encoder.onnx", "encoder.weights.h5"):
        assert (same / name).stat().st_ino == (model_dir / name).stat().st_ino
    assert Encoder.load(same).fingerprint == sample_encoder.fingerprint

    default = Encoder.load()  # another model: its own files are written, not the reused ones
    model_folder.write(default, other, reuse=model_dir)
    for name in ("vocab.json", "encoder.onnx", "encoder.weights.h5"):
        assert (other / name).stat().st_ino != (model_dir / name).stat().st_ino
    assert Encoder.load(other).fingerprint == default.fingerprint
