"""Metadata filters: applied before ranking, checked against a brute-force filter + ranking."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from click.testing import CliRunner

from siamsearch import Encoder, InputError, SearchIndex
from siamsearch import query as query_module
from siamsearch.cli import main
from siamsearch.scoring import exp_neg_l1

TOPICS = ["订单", "退款", "发票", "会员"]
CHARS = "我的订单怎么退款发票账户注册修改地址会员快递运费客服人工积分优惠券什么时候到账能不能取消"
FILTERS = [
    {"topic": "订单"},
    {"topic": ["退款", "发票"]},
    {"topic": "订单", "shard": 3},
    {"topic": ["订单", "会员"], "vip": True},
    {"topic": "没有这个"},
]


@pytest.fixture(scope="module")
def corpus():
    rng = random.Random(7)
    texts = ["".join(rng.choice(CHARS) for _ in range(rng.randint(3, 14))) for _ in range(3000)]
    metadata = [{"topic": rng.choice(TOPICS), "shard": i % 7, "vip": i % 5 == 0} for i in range(len(texts))]
    return texts, metadata


@pytest.fixture(scope="module")
def encoder():
    return Encoder.load()


@pytest.fixture(scope="module", params=["flat", "hnsw", "ivf", "flat, saved, then added to",
                                        "ivf, saved, then added to"])
def index(request, corpus, encoder, tmp_path_factory):
    texts, metadata = corpus
    kind, _, then = request.param.partition(",")
    if not then:
        return SearchIndex.build(texts, encoder, metadata=metadata, kind=kind)
    # the last 500 documents are in the loaded index's delta, searched beside FAISS (state.py)
    path = tmp_path_factory.mktemp("filters") / "idx"
    SearchIndex.build(texts[:2500], encoder, metadata=metadata[:2500], kind=kind).save(path)
    loaded = SearchIndex.load(path, mmap=True)
    loaded.add(texts[2500:], metadata=metadata[2500:])
    return loaded


def matches(metadata: dict, where: dict) -> bool:
    return all(metadata.get(f) in (v if isinstance(v, list) else [v]) for f, v in where.items())


def brute_force(index, corpus, query, where, k):
    """(id, score) of the best k matching documents, by exact score then id."""
    texts, metadata = corpus
    selected = [i for i, m in enumerate(metadata) if matches(m, where)]
    if not selected:
        return []
    scores = exp_neg_l1(index.encoder.encode([query])[0], index.vectors[selected])
    return sorted(((str(i), float(s)) for i, s in zip(selected, scores)), key=lambda x: (-x[1], x[0]))[:k]


@pytest.mark.parametrize("where", FILTERS)
@pytest.mark.parametrize("path", ["exact scan", "faiss selector"])
def test_filtered_search_matches_brute_force(index, corpus, where, path, monkeypatch):
    if path == "faiss selector":  # the selection is then too large to scan: FAISS searches within it
        monkeypatch.setattr(query_module, "EXACT_SCAN_MAX", 10)
    texts, metadata = corpus
    queries, k = texts[:25], 10
    recalls = []
    for query, hits in zip(queries, index.search_batch(queries, k, where=where)):
        expected = brute_force(index, corpus, query, where, k)
        assert len(hits) == len(expected)  # k hits whenever k documents match
        assert all(matches(h.metadata, where) for h in hits)
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
        truth = dict(brute_force(index, corpus, query, where, len(texts)))
        assert all(h.score == pytest.approx(truth[h.id], rel=1e-6) for h in hits)  # the exact pair score
        if path == "exact scan" or index.kind == "flat":
            assert [h.id for h in hits] == [i for i, _ in expected]
            assert [h.score for h in hits] == pytest.approx([s for _, s in expected], rel=1e-6)
        elif expected:
            recalls.append(len({h.id for h in hits} & {i for i, _ in expected}) / len(expected))
    assert not recalls or np.mean(recalls) >= 0.9


def test_a_filter_returns_k_hits_where_top_k_then_filter_returns_fewer(corpus, encoder):
    """The case txtai users reported (#301/#915): filtering after the top k loses matches."""
    texts, metadata = corpus
    index = SearchIndex.build(texts, encoder, metadata=metadata, kind="flat")
    rare = {"topic": "会员", "shard": 6, "vip": True}
    wanted = sum(matches(m, rare) for m in metadata)
    assert wanted >= 10
    after = [h for h in index.search(texts[0], 10) if matches(h.metadata, rare)]
    before = index.search(texts[0], 10, where=rare)
    assert len(after) < 10 and len(before) == 10


def test_filters_see_changes(corpus, encoder):
    texts, metadata = corpus
    index = SearchIndex.build(texts[:50], encoder, metadata=metadata[:50], kind="flat")
    assert index.search(texts[0], 5, where={"topic": "新"}) == []
    index.add(["一个新的问题"], ["new"], [{"topic": "新"}])
    assert [h.id for h in index.search(texts[0], 5, where={"topic": "新"})] == ["new"]
    index.remove(["new"])
    assert index.search(texts[0], 5, where={"topic": "新"}) == []


@pytest.mark.parametrize("where, message", [
    ({}, "the filter is empty"),
    ("topic=订单", "maps metadata fields to values"),
    ({"topic": []}, "empty list of values"),
    ({"topic": {"a": 1}}, "not a text, number or true/false value"),
    ({"topic": None}, "not a text, number or true/false value"),
    ({'to"pic': "x"}, "is not a field name"),
    ({" ": "x"}, "is not a field name"),
])
def test_invalid_filters_are_refused(corpus, encoder, where, message):
    texts, metadata = corpus
    index = SearchIndex.build(texts[:20], encoder, metadata=metadata[:20], kind="flat")
    with pytest.raises(InputError, match=message) as caught:
        index.search(texts[0], 5, where=where)
    assert caught.value.argument == "where"


def test_cli_where(tmp_path, corpus, encoder):
    texts, metadata = corpus
    SearchIndex.build(texts[:300], encoder, metadata=metadata[:300], kind="flat").save(tmp_path / "ix")
    run = CliRunner().invoke(main, ["query", "--index", str(tmp_path / "ix"), "--json", "-k", "20",
                                    "--where", "topic=订单", "--where", "topic=退款", "--where", "shard=3", texts[0]])
    assert run.exit_code == 0, run.output
    hits = json.loads(run.output)["hits"]
    expected = [m for m in metadata[:300] if m["topic"] in ("订单", "退款") and m["shard"] == 3]
    assert len(hits) == min(20, len(expected))
    assert all(h["metadata"]["topic"] in ("订单", "退款") and h["metadata"]["shard"] == 3 for h in hits)
    bad = CliRunner().invoke(main, ["query", "--index", str(tmp_path / "ix"), "--where", "topic", "x"])
    assert bad.exit_code == 2 and "is not FIELD=VALUE" in bad.output
    bad = CliRunner().invoke(main, ["query", "--index", str(tmp_path / "ix"), "--where", 'a"b=1', "x"])
    assert bad.exit_code == 1 and bad.output.startswith("Error: filter field 'a\"b'") and "Traceback" not in bad.output


def test_count_says_how_many_documents_a_filter_keeps_and_names_an_unknown_field(index, corpus):
    from siamsearch.errors import UnknownFieldError

    texts, metadata = corpus
    assert index.count() == len(index)
    for where in ({"topic": TOPICS[0]}, {"shard": [1, 2], "vip": True}, {"topic": "不存在"}):
        assert index.count(where) == sum(matches(m, where) for m in metadata)  # every variant holds them all
    with pytest.raises(UnknownFieldError, match="no document has the metadata field 'colour'"):
        index.search("退款", 5, where={"colour": "red"})
    with pytest.raises(UnknownFieldError, match="fields 'colour', 'size'"):
        index.count({"colour": "red", "size": 1, "topic": TOPICS[0]})
