"""pandas in and out: DataFrames, Parquet and Excel as corpora and pairs; hits as a DataFrame."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from siamsearch import Encoder, InputError, SearchIndex, read_corpus, read_pairs
from siamsearch.demo import SAMPLE_FAQ, SAMPLE_PAIRS
from siamsearch.evaluation import PairEvaluator


@pytest.fixture(scope="module")
def faq_frame() -> pd.DataFrame:
    return pd.read_csv(SAMPLE_FAQ, sep="\t")


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder.load()


def test_build_from_a_dataframe_equals_build_from_the_file(faq_frame, encoder):
    from_file = read_corpus(SAMPLE_FAQ, text_column="question")
    expected = SearchIndex.build(from_file.texts, encoder, ids=from_file.ids, metadata=from_file.metadata)
    index = SearchIndex.build(faq_frame, encoder, text_column="question")
    assert [(d.id, d.text, d.metadata) for d in index] == [(d.id, d.text, d.metadata) for d in expected]
    assert index.search("退款多久到账", 5) == expected.search("退款多久到账", 5)


def test_add_and_upsert_take_dataframes(faq_frame, encoder):
    index = SearchIndex.build(faq_frame.head(10), encoder, text_column="question")
    more = pd.DataFrame({"id": ["faq-001", "new-1"], "question": ["注册账号的方法", "花呗能用吗"],
                         "topic": ["账户", "支付"], "rank": [np.int64(3), None]})
    assert index.upsert(more, text_column="question") == 1
    assert index.get("new-1").metadata == {"topic": "支付", "rank": None}  # numpy and missing values made plain
    assert index.get("faq-001").metadata == {"topic": "账户", "rank": 3}
    added = index.add(pd.DataFrame({"text": ["发票怎么开", "  "]}))
    assert len(added) == 1 and len(index) == 12  # a blank text is skipped, as in a file
    with pytest.raises(InputError, match="leave ids and metadata out"):
        index.add(more, ids=["x", "y"], text_column="question")
    with pytest.raises(InputError, match="no column 'body'"):
        index.add(more, text_column="body")
    with pytest.raises(InputError, match="texts is not a DataFrame"):
        index.add(["x"], text_column="question")


def test_search_frame_is_tidy(faq_frame, encoder):
    index = SearchIndex.build(faq_frame, encoder, text_column="question")
    frame = index.search_frame(["退款多久到账", "怎么开发票"], k=3)
    assert list(frame.columns) == ["query", "rank", "id", "text", "score", "match", "answer", "topic"]
    assert len(frame) == 6 and list(frame["rank"]) == [1, 2, 3, 1, 2, 3]
    hits = index.search("怎么开发票", 3)
    assert list(frame[frame["query"] == "怎么开发票"]["id"]) == [h.id for h in hits]
    assert list(frame["score"][3:]) == [h.score for h in hits] and list(frame["match"][3:]) == [h.match for h in hits]
    empty = index.search_frame(["退款"], k=3, where={"topic": "没有"})
    assert empty.empty and list(empty.columns)[:6] == ["query", "rank", "id", "text", "score", "match"]


@pytest.mark.parametrize("suffix", [".parquet", ".xlsx"])
def test_table_files_read_like_csv(tmp_path, faq_frame, suffix):
    path = tmp_path / f"faq{suffix}"
    (faq_frame.to_parquet if suffix == ".parquet" else faq_frame.to_excel)(path, index=False)
    corpus = read_corpus(path, text_column="question")
    expected = read_corpus(SAMPLE_FAQ, text_column="question")
    assert (corpus.ids, corpus.texts, corpus.metadata) == (expected.ids, expected.texts, expected.metadata)
    pairs = pd.read_csv(SAMPLE_PAIRS, sep="\t", header=None, names=["sentence1", "sentence2", "label"])
    pair_path = tmp_path / f"pairs{suffix}"
    (pairs.to_parquet if suffix == ".parquet" else pairs.to_excel)(pair_path, index=False)
    read = read_pairs(pair_path)
    original = read_pairs(SAMPLE_PAIRS)
    assert read.left == original.left and read.right == original.right
    assert np.array_equal(read.labels, original.labels)


def test_table_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "bad.parquet"
    pd.DataFrame({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": ["1", "maybe"]}).to_parquet(path)
    with pytest.raises(InputError, match=r"bad\.parquet line 3: label 'maybe'"):
        read_pairs(path)
    dupes = tmp_path / "dupes.xlsx"
    pd.DataFrame({"id": ["a", "a"], "text": ["x", "y"]}).to_excel(dupes, index=False)
    with pytest.raises(InputError, match=r"dupes\.xlsx line 3: duplicate id 'a' \(first on line 2\)"):
        read_corpus(dupes)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match=r"broken\.parquet: cannot read it as \.parquet"):
        read_corpus(broken)
    with pytest.raises(InputError, match="no such file"):
        read_corpus(tmp_path / "missing.xlsx")


def test_pairs_from_a_dataframe_and_evaluation_as_records(encoder):
    frame = pd.read_csv(SAMPLE_PAIRS, sep="\t", header=None, names=["q1", "q2", "same"])
    pairs = read_pairs(frame, columns=["q1", "q2", "same"])
    assert len(pairs) == len(frame) and pairs.source == "DataFrame"
    records, scores = PairEvaluator(pairs).table(encoder)
    table = pd.DataFrame(records)
    assert table.loc[0, "name"] == "siamsearch" and 0.5 < table.loc[0, "roc_auc"] <= 1
    assert len(scores["siamsearch"]) == len(pairs)
