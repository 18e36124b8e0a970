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
