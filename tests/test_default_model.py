"""The model shipped inside the package: every --model defaults to it."""

import json

import pytest
from click.testing import CliRunner

from siamsearch import Encoder
from siamsearch.cli import main
from siamsearch.encoder import DEFAULT_MODEL

# Written for this test (banking customer-service style, not taken from any dataset).
QUESTION = "我的贷款什么时候能到账"
SAME = "借款申请后多久到账"
OTHER = "怎么修改绑定的手机号码"


def test_the_shipped_model_loads_without_a_path_and_carries_its_card():
    encoder = Encoder.load()
    assert encoder.fingerprint == Encoder.load(DEFAULT_MODEL).fingerprint
    assert 0 < encoder.threshold < 1
    assert (DEFAULT_MODEL / "MODEL_CARD.md").is_file()
    size = sum(f.stat().st_size for f in DEFAULT_MODEL.iterdir())
    # a general vocabulary (4,363 characters × 300-d, stored in both encoder.onnx and the Keras weights) is
    # most of it; the BQ model it replaced, with 1,527 characters, was 7.5 MiB
    assert size < 16 << 20, f"the shipped model is {size / (1 << 20):.1f} MiB; keep it to about 15 MiB"


def test_the_shipped_model_scores_a_paraphrase_above_an_unrelated_question():
    encoder = Encoder.load()
    assert encoder.similarity(QUESTION, SAME) > encoder.similarity(QUESTION, OTHER)
    assert encoder.predict(QUESTION, SAME) and not encoder.predict(QUESTION, OTHER)


def test_commands_use_the_shipped_model_when_no_model_is_given(tmp_path):
    runner = CliRunner()
    score = runner.invoke(main, ["similarity", QUESTION, SAME])
    assert score.exit_code == 0, score.output
    assert float(score.output) == pytest.approx(Encoder.load().similarity(QUESTION, SAME), rel=1e-6)
    corpus = tmp_path / "faq.txt"
    corpus.write_text(f"{SAME}\n{OTHER}\n", encoding="utf-8")
    built = runner.invoke(main, ["build-index", str(corpus), "--out", str(tmp_path / "idx")])
    assert built.exit_code == 0, built.output
    hits = runner.invoke(main, ["query", "--index", str(tmp_path / "idx"), "--json", QUESTION])
    assert json.loads(hits.output)["hits"][0]["text"] == SAME


def test_every_shipped_model_is_listed_with_its_card_and_headline_and_loads_by_name():
    from siamsearch.info import describe_shipped
    from siamsearch.shipped import shipped_models

    assert list(shipped_models()) == ["default", "bq"]
    for name, path in shipped_models().items():
        assert Encoder.load(name).fingerprint == Encoder.load(path).fingerprint
        assert sum(f.stat().st_size for f in path.iterdir()) < 16 << 20
    assert Encoder.load("bq").fingerprint.startswith("aa6af44ddd29") and Encoder.load("bq").calibration is not None
    listed = CliRunner().invoke(main, ["info"])
    assert listed.exit_code == 0, listed.output
    assert [line.split(":")[0] for line in listed.output.splitlines() if not line.startswith(" ")] == ["default", "bq"]
    assert all(m["headline"] and m["training"]["pairs"]["n"] > 0 for m in describe_shipped())


def test_a_folder_of_the_user_s_named_like_a_shipped_model_wins(tmp_path, monkeypatch, sample_encoder):
    sample_encoder.save(tmp_path / "bq")
    monkeypatch.chdir(tmp_path)
    assert Encoder.load("bq").fingerprint == sample_encoder.fingerprint
    result = CliRunner().invoke(main, ["similarity", "--model", "nope", QUESTION, SAME])
    assert result.exit_code == 1 and "nope: no such model directory, nor a shipped model (those are default, bq)" \
        in result.output


def test_the_bq_model_keeps_its_pair_accuracy_on_bq_test():
    from siamsearch import read_pairs
    from siamsearch.evaluation import PairEvaluator

    from .conftest import shared_file

    metrics = PairEvaluator(read_pairs(shared_file("bq/test.tsv")))(Encoder.load("bq"))
    assert metrics["accuracy"] >= 0.80


def test_init_from_a_shipped_model_by_name(tmp_path):
    from siamsearch.demo import SAMPLE_PAIRS

    result = CliRunner().invoke(main, ["train", str(SAMPLE_PAIRS), "--init", "bq", "--epochs", "1",
                                       "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    tuned = Encoder.load(tmp_path / "m")
    assert tuned.training["init"]["fingerprint"] == Encoder.load("bq").fingerprint
    assert tuned.vocab.chars[: len(Encoder.load("bq").vocab.chars)] == Encoder.load("bq").vocab.chars
