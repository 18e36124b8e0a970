"""Pair-classification metrics, the validation threshold, and 'siamsearch evaluate' on pairs."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from siamsearch import Encoder
from siamsearch.cli import main
from siamsearch.errors import ModelDirectoryError
from siamsearch.metrics import best_threshold, pair_metrics

from .conftest import evaluate_json


def test_pair_metrics_hand_computed():
    scores = np.array([0.9, 0.8, 0.4, 0.3, 0.6, 0.1])
    labels = np.array([1, 1, 1, 0, 0, 0])
    m = pair_metrics(scores, labels, threshold=0.5)
    # predicted positive: 0.9, 0.8, 0.6 → tp 2, fp 1, fn 1, tn 2
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    # ROC-AUC: of the 9 (positive, negative) score pairs, the positive is higher in 8
    assert m["roc_auc"] == pytest.approx(8 / 9)
    # Spearman: Pearson's correlation of the ranks; scores ranked 6 5 3 2 4 1, labels tied (5 5 5 2 2 2)
    ranks, tied = np.array([6, 5, 3, 2, 4, 1.0]), np.array([5, 5, 5, 2, 2, 2.0])
    assert m["spearman"] == pytest.approx(np.corrcoef(ranks, tied)[0, 1])
    assert pair_metrics(scores, np.ones(6))["roc_auc"] is None  # one class: undefined, not a crash
    assert pair_metrics(scores, np.ones(6))["spearman"] is None
    assert pair_metrics(np.full(6, 0.5), labels)["spearman"] is None  # constant scores: undefined too


def test_best_threshold_maximises_accuracy_halfway_between_scores():
    scores = np.array([0.9, 0.8, 0.4, 0.3, 0.6, 0.1])
    labels = np.array([1, 1, 1, 0, 0, 0])
    t = best_threshold(scores, labels)
    assert pair_metrics(scores, labels, t)["accuracy"] == pytest.approx(5 / 6)
    assert t == pytest.approx(0.35) or t == pytest.approx(0.7)
    assert best_threshold(np.array([0.2, 0.2]), np.array([1, 0])) in (0.2, np.nextafter(0.2, 1))  # ties: no split


def test_threshold_round_trips_through_the_model_directory(sample_encoder, tmp_path):
    original = sample_encoder.threshold
    try:
        sample_encoder.threshold = 0.3125
        sample_encoder.save(tmp_path / "m")
    finally:
        sample_encoder.threshold = original
    loaded = Encoder.load(tmp_path / "m")
    assert loaded.threshold == 0.3125
    a, b = "怎么退货", "如何申请退货"
    assert loaded.predict(a, b) == (loaded.similarity(a, b) >= 0.3125)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["threshold"] = 7
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirectoryError, match="threshold"):
        Encoder.load(tmp_path / "m")


def test_training_with_validation_stores_the_best_validation_threshold(sample_encoder):
    from siamsearch import TrainConfig, read_pairs, train
    from siamsearch.demo import SAMPLE_PAIRS
    from siamsearch.scoring import exp_neg_l1

    pairs = read_pairs(SAMPLE_PAIRS)
    encoder = train(pairs, pairs, TrainConfig(epochs=1, seed=2))
    scores = exp_neg_l1(encoder.encode(pairs.left), encoder.encode(pairs.right))
    assert encoder.threshold == best_threshold(scores, pairs.labels)
    assert encoder.metrics["valid"]["threshold"] == encoder.threshold


def test_cli_evaluate_pairs_matches_hand_computed_metrics(sample_encoder, tmp_path):
    pairs = [("怎么退货", "如何申请退货", 1), ("怎么退货", "发票怎么开", 0), ("修改收货地址", "地址填错了能改吗", 1),
             ("会员怎么续费", "快递到哪了", 0)]
    report, scores, pair_file = evaluate_json(sample_encoder, pairs, tmp_path)
    labels = np.array([y for *_, y in pairs])
    predicted = scores >= sample_encoder.threshold
    assert report["threshold"] == sample_encoder.threshold
    assert report["accuracy"] == pytest.approx(np.mean(predicted == (labels == 1)))
    ordered = [sp > sn for sp in scores[labels == 1] for sn in scores[labels == 0]]
    assert report["roc_auc"] == pytest.approx(np.mean(ordered))
    from scipy.stats import spearmanr

    assert report["spearman"] == pytest.approx(spearmanr(scores, labels).statistic)
    text = CliRunner().invoke(main, ["evaluate", str(pair_file), "--model", str(tmp_path / "m")])
    assert "accuracy" in text.output and "ROC-AUC" in text.output and "Spearman" in text.output


def test_pair_evaluator_scores_every_pair_at_the_encoders_threshold_unless_told(sample_encoder):
    from siamsearch.data import Pairs
    from siamsearch.evaluation import PairEvaluator

    pairs = Pairs(["怎么退货", "怎么退货"], ["如何申请退货", "发票怎么开"], np.array([1.0, 0.0], np.float32))
    evaluator = PairEvaluator(pairs)
    scores = evaluator.scores(sample_encoder)
    assert scores == pytest.approx([sample_encoder.similarity(a, b) for a, b in zip(pairs.left, pairs.right)], rel=1e-6)
    assert evaluator(sample_encoder) == pair_metrics(scores, pairs.labels, sample_encoder.threshold)
    assert evaluator(sample_encoder, threshold=0.0)["recall"] == 1.0
