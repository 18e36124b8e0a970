"""The retrieval evaluation: task definition and metrics against hand-computed values, the
lexical baselines, and the BM25 reference figures on BQ (the proof the task matches)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from siamsearch.baselines import BM25Retriever, TfidfRetriever
from siamsearch.cli import main
from siamsearch.data import read_pairs
from siamsearch.evaluation import EncoderRetriever, RetrievalEvaluator
from siamsearch.lexical import terms
from siamsearch.metrics import RetrievalTask, retrieval_metrics

from .conftest import shared_file

# A ~ B ~ C ~ H through positive pairs (transitively); E ~ F; G = G is an identical pair (no query);
# D is only in negative pairs. Corpus in first-seen order: A B C D E F G H → positions 0..7.
TINY = """\
A\tB\t1
B\tC\t1
D\tE\t0
E\tF\t1
G\tG\t1
A\tD\t0
H\tA\t1
X\tY\t0
"""
DISTRACTORS = "A\tZ\t1\nZ\tW\t0\n"  # a positive pair here must not make Z relevant: only the main file counts
A, B, C, D, E, F, G, H, X, Y, Z, W = range(12)


@pytest.fixture
def tiny(tmp_path):
    main_file, extra = tmp_path / "tiny.tsv", tmp_path / "extra.tsv"
    main_file.write_text(TINY, encoding="utf-8")
    extra.write_text(DISTRACTORS, encoding="utf-8")
    return main_file, extra


def test_task_corpus_queries_and_transitive_relevance(tiny):
    task = RetrievalTask.from_pairs(read_pairs(tiny[0]), [read_pairs(tiny[1])])
    assert task.corpus == list("ABCDEFGHXYZW")
    assert task.queries == [A, B, E, H]  # distinct sentence1 of positive pairs; G\tG skipped
    assert task.relevant == [frozenset({B, C, H}), frozenset({A, C, H}), frozenset({F}), frozenset({A, B, C})]


class Fixed:
    """A retriever that returns a fixed ranking per query text."""

    name = "fixed"

    def __init__(self, rankings: dict[str, list[int]]):
        self.rankings = rankings

    def index(self, corpus):
        self.corpus = list(corpus)

    def search(self, query, k):
        return self.rankings[query][:k]


def test_metrics_hand_computed_with_self_exclusion(tiny):
    task = RetrievalTask.from_pairs(read_pairs(tiny[0]))
    rankings = {
        "A": [A, D, B, C],  # A itself is dropped → D, B: first relevant at rank 2 → RR 1/2
        "B": [C, A],  # rank 1 → RR 1
        "E": [D, G, X, Y],  # F never found → 0
        # H: ten irrelevant documents after itself (self-exclusion must not pull A into the top 10)
        "H": [H, D, E, F, G, X, Y, D, E, F, G, A],
    }
    result = RetrievalEvaluator(task)(Fixed(rankings))
    assert result["recall@1"] == pytest.approx(1 / 4)
    assert result["recall@10"] == pytest.approx(2 / 4)
    assert result["mrr@10"] == pytest.approx((1 / 2 + 1 + 0 + 0) / 4)
    assert (result["queries"], result["corpus"]) == (4, 10)
    assert result["ms_per_query"] >= 0


def test_metrics_stop_at_rank_ten():
    relevant = [frozenset({99})]
    assert retrieval_metrics([list(range(9)) + [99]], relevant) == {"recall@1": 0, "recall@10": 1, "mrr@10": 0.1}
    assert retrieval_metrics([list(range(10)) + [99]], relevant) == {"recall@1": 0, "recall@10": 0, "mrr@10": 0}


def test_a_pair_file_without_queries_is_refused_by_the_library(tmp_path):
    from siamsearch.errors import InputError

    (tmp_path / "neg.tsv").write_text("A\tB\t0\nC\tC\t1\n", encoding="utf-8")
    with pytest.raises(InputError, match="no positive pairs of two different sentences"):
        RetrievalTask.from_pairs(read_pairs(tmp_path / "neg.tsv"))


def test_lexical_top_k_breaks_ties_by_corpus_position():
    from siamsearch.baselines import top_k

    scores = np.array([1.0, 3.0, 3.0, 2.0, 3.0])
    assert top_k(scores, 2) == [1, 2]
    assert top_k(scores, 4) == [1, 2, 4, 3]
    assert top_k(scores, 10) == [1, 2, 4, 3, 0]


def test_terms_are_unigrams_then_bigrams_within_words_case_folded():
    assert terms("开通花") == ["开", "通", "花", "开通", "通花"]
    assert terms("Ab 开通") == ["a", "b", "开", "通", "ab", "开通"]


@pytest.mark.parametrize("retriever", [BM25Retriever, TfidfRetriever])
def test_lexical_baselines_rank_the_overlapping_document_first(retriever):
    r = retriever()
    r.index(["花呗怎么还款", "借呗额度是多少", "怎么开通花呗", "今天天气"])
    assert r.search("开通花呗", 2)[0] == 2
    assert r.search("借呗的额度", 1) == [1]
    assert len(r.search("未见过的字", 3)) == 3  # unknown terms score zero, nothing fails


def test_encoder_retriever_goes_through_the_search_index(sample_encoder, sample_faq):
    texts = sample_faq.texts[:50]
    retriever = EncoderRetriever(sample_encoder)
    retriever.index(texts)
    ranked = retriever.search(texts[7], 5)
    assert ranked[0] == 7  # a document is its own nearest neighbour (score exp(0) = 1)
    hits = retriever.search_index.search(texts[7], 5)
    assert [int(h.id) for h in hits] == ranked


def test_cli_evaluate_retrieval_with_baselines_json(tiny, sample_encoder, tmp_path):
    sample_encoder.save(tmp_path / "model")
    result = CliRunner().invoke(main, ["evaluate", "--retrieval", str(tiny[0]), "--model", str(tmp_path / "model"),
                                       "--distractors", str(tiny[1]), "--baselines", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.splitlines()[-1])
    assert (report["corpus"], report["queries"]) == (12, 4)
    assert [r["name"].split(" ")[0] for r in report["results"]] == ["siamsearch"] * 3 + ["BM25", "TF-IDF", "use-m3"]
    for r in report["results"]:
        assert 0 <= r["mrr@10"] <= r["recall@10"] <= 1


def test_cli_evaluate_baselines_without_retrieval_score_the_pairs(tiny, sample_encoder, tmp_path):
    """Issue 21: --baselines applies to pair classification too (threshold-free figures only)."""
    sample_encoder.save(tmp_path / "model")
    result = CliRunner().invoke(main, ["evaluate", str(tiny[0]), "--model", str(tmp_path / "model"), "--baselines",
                                       "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.splitlines()[-1])
    assert [b["name"].split(" ")[0] for b in report["baselines"]] == ["BM25", "TF-IDF", "use-m3"]
    for b in report["baselines"]:
        assert b["accuracy"] is None and 0 <= b["roc_auc"] <= 1 and -1 <= b["spearman"] <= 1
    refused = CliRunner().invoke(main, ["evaluate", str(tiny[0]), "--distractors", str(tiny[1])])
    assert refused.exit_code == 2 and "--retrieval" in refused.output


# Reference figures of the issue: character unigram+bigram BM25, k1 1.2, b 0.75, query terms once.
BM25_REFERENCE = {
    (): {"recall@1": 0.189, "recall@10": 0.569, "mrr@10": 0.297, "corpus": 6270, "queries": 2471},
    ("train.tsv", "dev.tsv"): {"recall@1": 0.039, "recall@10": 0.272, "mrr@10": 0.096, "corpus": 35395,
                               "queries": 2471},
}


@pytest.mark.parametrize("distractors", list(BM25_REFERENCE))
def test_bm25_reproduces_the_reference_figures_on_bq(distractors):
    task = RetrievalTask.from_pairs(read_pairs(shared_file("bq/test.tsv")),
                                    [read_pairs(shared_file(f"bq/{d}")) for d in distractors])
    expected = BM25_REFERENCE[distractors]
    assert (len(task.corpus), len(task.queries)) == (expected["corpus"], expected["queries"])
    result = RetrievalEvaluator(task)(BM25Retriever())
    for metric in ("recall@1", "recall@10", "mrr@10"):
        assert result[metric] == pytest.approx(expected[metric], abs=0.01), metric
    assert np.isfinite(result["ms_per_query"])
