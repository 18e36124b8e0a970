"""Every encoder architecture of the registry through the same checks.

A new architecture added to ``architectures.ARCHITECTURES`` runs through every test here
(export, the model folder, the contract from ``train`` to ``query`` on the CLI without
TensorFlow, every objective, ``init``, a teacher, the streamed build and the service)
without a line changing. The Ray build runs over every architecture in test_build.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from siamsearch import Encoder, SearchIndex, TrainConfig, read_pairs, train
from siamsearch.architectures import ARCHITECTURES, BiLSTM, EncoderConfig
from siamsearch.build import build_index
from siamsearch.cli import main
from siamsearch.demo import SAMPLE_FAQ, SAMPLE_PAIRS
from siamsearch.errors import InputError
from siamsearch.export import probe_ids
from siamsearch.service import Settings, create_app
from siamsearch.training import OBJECTIVES

from .conftest import CharTeacher, keras_scores

NAMES = list(ARCHITECTURES)
QUERIES = ["我的退款什么时候能到账", "密码不记得了", "能开公司发票吗"]


@pytest.mark.parametrize("name", NAMES)
def test_each_architecture_exports_what_keras_computes_and_round_trips(architecture_encoder, tmp_path, name):
    encoder = architecture_encoder(name)
    assert encoder.config.architecture.name == name and encoder.dim == encoder.config.architecture.output_dim
    ids = probe_ids(encoder.config)
    keras_vectors = encoder.keras_model()(ids, training=False).numpy()
    assert np.abs(encoder.run(ids) - keras_vectors).max() <= 1e-5
    encoder.save(tmp_path / "m")
    written = json.loads((tmp_path / "m" / "config.json").read_text())["encoder"]
    assert EncoderConfig.from_dict(written) == encoder.config  # the sizes are recorded, and read back
    loaded = Encoder.load(tmp_path / "m")
    assert loaded.fingerprint == encoder.fingerprint
    texts = ["怎么退货", "我的退款什么时候能到账啊为什么还没有到", "发票"]
    alone = np.concatenate([loaded.encode([t]) for t in texts])
    assert np.array_equal(loaded.encode(texts), alone)  # a vector does not depend on its batch, bit for bit


@pytest.mark.parametrize("name", NAMES)
def test_each_architecture_from_train_to_query_on_the_cli_without_tensorflow(tmp_path, name):
    runner = CliRunner()
    result = runner.invoke(main, ["train", str(SAMPLE_PAIRS), "--architecture", name, "--epochs", "1",
                                  "--out", str(tmp_path / "model")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["build-index", str(SAMPLE_FAQ), "--model", str(tmp_path / "model"),
                                  "--text-column", "question", "--out", str(tmp_path / "index")])
    assert result.exit_code == 0, result.output
    code = ("import json, sys; from siamsearch.cli import main\n"
            "try:\n    main(['query', '--index', sys.argv[1], '-k', '5', '--json', sys.argv[2]])\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "heavy = [m for m in ('tensorflow', 'keras', 'onnx', 'gensim') if m in sys.modules]\n"
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "index"), QUERIES[0]], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    hits = json.loads(done.stdout.strip().splitlines()[-1])["hits"]
    encoder = Encoder.load(tmp_path / "model")
    assert encoder.config.architecture.name == name and len(hits) == 5
    assert np.allclose([h["score"] for h in hits], keras_scores(encoder, [QUERIES[0]] * 5, [h["text"] for h in hits]),
                       atol=1e-5, rtol=0)


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("name", NAMES)
def test_each_architecture_trains_with_every_objective(name, objective):
    pairs = read_pairs(SAMPLE_PAIRS).subset(slice(300))
    encoder = train(pairs, pairs, TrainConfig(epochs=1, batch_size=64, architecture=name, objective=objective))
    assert encoder.config.architecture.name == name and len(encoder.history) == 1
    left, right = pairs.left[:10], pairs.right[:10]
    assert np.allclose([encoder.similarity(a, b) for a, b in zip(left, right)], keras_scores(encoder, left, right),
                       atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_each_architecture_fine_tunes_from_its_model_and_learns_from_a_teacher(architecture_encoder, name):
    base = architecture_encoder(name)
    pairs = read_pairs(SAMPLE_PAIRS).subset(slice(200))
    tuned = train(pairs, config=TrainConfig(epochs=1, batch_size=64, objective="margin"), init=base,
                  teacher=CharTeacher(), unlabelled=["后天会刮风吗"])
    assert tuned.config.architecture == base.config.architecture and tuned.training["init"]["fingerprint"] == \
        base.fingerprint
    assert tuned.training["teacher"]["name"] == "chars"
    left, right = pairs.left[:10], pairs.right[:10]
    assert np.allclose([tuned.similarity(a, b) for a, b in zip(left, right)], keras_scores(tuned, left, right),
                       atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_each_architecture_is_built_streamed_and_served_exactly(architecture_encoder, tmp_path, name):
    encoder = architecture_encoder(name)
    built = build_index(SAMPLE_FAQ, tmp_path / "index", encoder, text_column="question", chunk_size=64)
    assert built.documents == 200
    http = TestClient(create_app(Settings(str(tmp_path / "index"))))
    for query in QUERIES:
        hits = http.post("/v1/search", json={"query": query, "k": 5}).json()["hits"]
        assert [h["id"] for h in hits] == [h.id for h in SearchIndex.load(tmp_path / "index").search(query, 5)]
        assert np.allclose([h["score"] for h in hits], keras_scores(encoder, [query] * 5, [h["text"] for h in hits]),
                           atol=1e-5, rtol=0)


def test_an_unknown_architecture_or_setting_is_one_clear_error(sample_encoder):
    with pytest.raises(InputError, match="unknown architecture 'transformer'; choose one of bilstm, cnn") as e:
        TrainConfig(architecture="transformer")
    assert e.value.argument == "architecture"
    with pytest.raises(InputError, match="cnn setting filters must be a positive integer, not 0"):
        TrainConfig(architecture="cnn", encoder_settings={"filters": 0})
    with pytest.raises(InputError, match=r"unknown bilstm settings \['filters'\]"):
        TrainConfig(encoder_settings={"filters": 8})
    assert TrainConfig(encoder_settings={"lstm_units": 16}).network() == BiLSTM((16,))
    with pytest.raises(InputError, match="init starts from the model's own network"):
        train(read_pairs(SAMPLE_PAIRS), config=TrainConfig(architecture="cnn"), init=sample_encoder)
    result = CliRunner().invoke(main, ["train", str(SAMPLE_PAIRS), "--encoder-setting", "filters=many",
                                       "--out", "unused"])
    assert result.exit_code == 2 and "'filters=many' is not NAME=INTEGER" in result.output
