"""Sharded indexes (shards.py): N index folders behind one shard map answer exactly as one
index of the same documents would, for every kind, through changes; the map is checked;
every shard is an ordinary index; and the CLI builds, describes and queries one."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from siamsearch import IndexDirectoryError, InputError, SearchIndex, ShardedIndex
from siamsearch.build import build_index
from siamsearch.cli import main
from siamsearch.demo import SAMPLE_FAQ
from siamsearch.fusion import MODES, Reciprocal, Weighted
from siamsearch.shard_map import QUANTISER_FILE, SHARD_MAP, shard_of
from siamsearch.shards import build_sharded

from .test_hybrid import as_written_before_lexical

QUERIES = ["怎么注册账号", "退款多久到账", "发票怎么开", "运费谁出", "忘记密码怎么办", "会员", "怎么退货退款",
           "？！。，", "🙂🙂", "VIP member", "12345"]  # the last: no term, or none in common, with any document
KINDS = {"flat": {}, "hnsw": {}, "ivf": {"nlist": 8, "nprobe": 8}}  # every list probed: one index's candidates


@pytest.fixture(scope="module")
def encoder():
    from siamsearch import Encoder

    return Encoder.load()


def answers(index, **options) -> list[list[tuple]]:
    return [[(h.id, h.score, h.match, h.lexical, h.rank_score) for h in hits]
            for hits in index.search_batch(QUERIES, **options)]


def assert_same(one, sharded, **options) -> None:
    """The same ids in the same order, and the same scores, match, BM25 and rank score (within 1e-6)."""
    a, b = answers(one, **options), answers(sharded, **options)
    assert [[hit[0] for hit in q] for q in a] == [[hit[0] for hit in q] for q in b], options
    assert any(a), options
    for qa, qb in zip(a, b):
        for field in range(1, 5):
            np.testing.assert_allclose([np.nan if h[field] is None else h[field] for h in qa],
                                       [np.nan if h[field] is None else h[field] for h in qb], rtol=0, atol=1e-6)


def assert_same_in_every_mode(one, sharded, **options) -> None:
    for mode in MODES:
        assert_same(one, sharded, mode=mode, **options)
    for fusion in (Reciprocal(), Weighted(0.3)):
        assert_same(one, sharded, mode="hybrid", fusion=fusion, **options)


@pytest.mark.parametrize("kind", KINDS)
def test_sharded_answers_as_one_index_through_changes(kind, encoder, tmp_path):
    one_path, sharded_path = tmp_path / "one", tmp_path / "sharded"
    build_index(SAMPLE_FAQ, one_path, encoder, kind=kind, text_column="question", **KINDS[kind])
    built = build_sharded(SAMPLE_FAQ, sharded_path, encoder, 3, kind=kind, text_column="question", **KINDS[kind])
    assert built.documents == 200 and sum(built.per_shard) == 200 and min(built.per_shard) > 0
    one, sharded = SearchIndex.load(one_path), SearchIndex.load(sharded_path)
    assert isinstance(sharded, ShardedIndex) and len(sharded) == len(one) == 200
    for options in ({"k": 10}, {"k": 1}, {"k": 200}, {"k": 5, "where": {"topic": "退款"}},
                    {"k": 5, "where": {"topic": ["账户", "发票"]}}, {"k": 10, "min_match": 0.4}):
        assert_same_in_every_mode(one, sharded, **options)
    assert sharded.count({"topic": "退款"}) == one.count({"topic": "退款"}) > 0
    # each shard's own BM25 counts are not one index's; summed, they are
    own = [shard.lexical_statistics(QUERIES)[1] for shard in sharded.shards]
    summed, expected = sum(own[1:], own[0]), one.lexical_statistics(QUERIES)[1]
    assert summed.documents == expected.documents == 200 and summed.length == expected.length
    np.testing.assert_array_equal(summed.df, expected.df)
    assert all(counts.documents < 200 for counts in own)
    assert sharded.get("faq-007") == one.get("faq-007")

    # the same changes to both, saved and loaded again
    for index, path in ((one, one_path), (sharded, sharded_path)):
        index.add(["退款到账要几天", "发票能不能重开"], metadata=[{"topic": "退款"}, {"topic": "发票"}])
        index.upsert(["会员怎么续费才便宜"], ids=["faq-010"], metadata=[{"topic": "会员"}])
        index.remove(["faq-001", "faq-150", "faq-151"])
        index.save(path)
    one, sharded = SearchIndex.load(one_path), SearchIndex.load(sharded_path)
    assert len(sharded) == len(one) == 199 and sharded.get("1") == one.get("1") is not None
    assert_same_in_every_mode(one, sharded, k=10)
    assert_same_in_every_mode(one, sharded, k=5, where={"topic": "退款"})
    assert one.compact() == sharded.compact() == 4  # three removed, one replaced
    assert_same_in_every_mode(one, sharded, k=10)


def test_every_shard_is_an_ordinary_index_holding_its_ids(encoder, tmp_path):
    build_sharded(SAMPLE_FAQ, tmp_path / "s", encoder, 4, kind="ivf", text_column="question", nlist=4)
    found = json.loads((tmp_path / "s" / SHARD_MAP).read_text(encoding="utf-8"))
    assert found["shards"] == 4 and found["folders"] == [f"shard-{i:03d}" for i in range(4)]
    centroids = np.load(tmp_path / "s" / QUANTISER_FILE)
    for i, folder in enumerate(found["folders"]):
        shard = SearchIndex.load(tmp_path / "s" / folder)
        assert type(shard) is SearchIndex and shard.spec == SearchIndex.load(tmp_path / "s").spec
        assert {doc.id for doc in shard} and all(shard_of(doc.id, 4) == i for doc in shard)
        assert shard.search("退款多久到账", k=3)  # searchable on its own
        faiss_index = shard._state.faiss_index  # the one quantiser every shard's lists are built around
        np.testing.assert_array_equal(faiss_index.quantizer.reconstruct_n(0, faiss_index.nlist), centroids)


def test_placement_never_changes():
    """Ids already placed must stay where they are: a new hash would misplace every one."""
    assert [shard_of(i, 4) for i in ("faq-001", "faq-002", "0", "文档-7", "a" * 300)] == [2, 3, 0, 3, 3]
    counts = np.bincount([shard_of(str(i), 8) for i in range(8000)], minlength=8)
    assert counts.min() > 900  # spread evenly


def test_changes_are_all_or_nothing_across_shards(encoder, tmp_path):
    build_sharded(SAMPLE_FAQ, tmp_path / "s", encoder, 3, text_column="question")
    sharded = SearchIndex.load(tmp_path / "s")
    with pytest.raises(InputError, match="'faq-003' already exists"):
        sharded.add(["新问题一", "新问题二"], ids=["new-1", "faq-003"])
    with pytest.raises(InputError, match="no document with id 'nope'"):
        sharded.remove(["faq-001", "nope"])
    assert sharded.remove(["faq-005", "faq-005", "faq-006"]) == 2  # a repeated id counts once, as in one index
    assert sharded.get("faq-005") is None and sharded.get("faq-006") is None and len(sharded) == 198
    sharded = SearchIndex.load(tmp_path / "s")
    with pytest.raises(InputError, match="upsert needs ids"):
        sharded.upsert(["新问题一"])
    with pytest.raises(InputError, match="empty or whitespace"):
        sharded.add(["新问题一", "  "], ids=["new-1", "new-2"])
    assert len(sharded) == 200 and sharded.get("new-1") is None and sharded.get("faq-001") is not None
    import pandas as pd

    frame = pd.DataFrame({"id": ["faq-001", "new-9"], "text": ["改过的注册问题", "新的问题"],
                          "topic": ["账户", "其他"]})
    assert sharded.upsert(frame) == 1 and sharded.get("new-9").metadata == {"topic": "其他"}
    assert sharded.get("faq-001").text == "改过的注册问题" and len(sharded) == 201
    with pytest.raises(InputError, match="no document has the metadata field 'colour'"):
        sharded.search("退款", where={"colour": "red"})


def test_a_damaged_shard_map_is_one_line(encoder, tmp_path):
    build_sharded(SAMPLE_FAQ, tmp_path / "s", encoder, 2, text_column="question")
    path = tmp_path / "s" / SHARD_MAP
    found = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**found, "shards": 3}), encoding="utf-8")
    with pytest.raises(IndexDirectoryError, match="does not match its checksum"):
        SearchIndex.load(tmp_path / "s")
    path.write_text("{", encoding="utf-8")
    result = CliRunner().invoke(main, ["query", "--index", str(tmp_path / "s"), "退款"])
    assert result.exit_code == 1 and "shards.json is unreadable" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_a_damaged_quantiser_or_shard_is_one_line(encoder, tmp_path):
    build_sharded(SAMPLE_FAQ, tmp_path / "s", encoder, 2, kind="ivf", text_column="question", nlist=2)
    np.save(tmp_path / "s" / QUANTISER_FILE, np.zeros((2, encoder.dim), np.float32))
    with pytest.raises(IndexDirectoryError, match="quantiser.npy is missing or does not match shards.json"):
        SearchIndex.load(tmp_path / "s")
    (tmp_path / "s" / QUANTISER_FILE).unlink()
    with pytest.raises(IndexDirectoryError, match="quantiser.npy is missing"):
        SearchIndex.load(tmp_path / "s")


def test_cli_builds_describes_and_queries_a_sharded_index(tmp_path):
    runner = CliRunner()
    one, sharded = str(tmp_path / "one"), str(tmp_path / "sharded")
    built = runner.invoke(main, ["build-index", str(SAMPLE_FAQ), "--text-column", "question", "--out", one])
    assert built.exit_code == 0
    result = runner.invoke(main, ["build-index", str(SAMPLE_FAQ), "--text-column", "question", "--out", sharded,
                                  "--shards", "2"])
    assert result.exit_code == 0 and "200 documents" in result.output and "2 shards of" in result.output
    result = runner.invoke(main, ["info", sharded])
    assert result.exit_code == 0 and "sharded index, 2 shards" in result.output and "shard-001" in result.output
    assert "modes        dense, lexical, hybrid" in result.output
    for mode in MODES:
        queried = [runner.invoke(main, ["query", "--index", path, "--json", "-k", "5", "--mode", mode,
                                        *QUERIES[:3]]).output for path in (one, sharded)]
        hits = [[json.loads(line) for line in output.splitlines()] for output in queried]
        assert len(hits[0]) == 3 and hits[0] == hits[1], mode
    result = runner.invoke(main, ["build-index", str(SAMPLE_FAQ), "--text-column", "question", "--out", sharded,
                                  "--shards", "2"])
    assert result.exit_code == 1 and "exists and is not an empty folder" in result.output
    result = runner.invoke(main, ["build-index", str(SAMPLE_FAQ), "--text-column", "question",
                                  "--out", str(tmp_path / "many"), "--shards", "300"])
    assert result.exit_code == 1 and "holds no documents" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "many").exists() and not list(tmp_path.glob(".many*"))


def test_a_shard_without_a_lexical_part_is_given_one_by_compact(encoder, tmp_path):
    build_index(SAMPLE_FAQ, tmp_path / "one", encoder, kind="flat", text_column="question")
    build_sharded(SAMPLE_FAQ, tmp_path / "s", encoder, 2, kind="flat", text_column="question")
    as_written_before_lexical(tmp_path / "s" / "shard-001")  # as an older siamsearch wrote it
    sharded = SearchIndex.load(tmp_path / "s")
    assert not sharded.has_lexical
    with pytest.raises(InputError, match=r"a hybrid search needs a lexical part.*compact\(lexical=True\)"):
        sharded.search("退款", mode="hybrid")
    added = CliRunner().invoke(main, ["compact", "--index", str(tmp_path / "s"), "--lexical"])
    assert added.exit_code == 0 and "added its lexical part" in added.output, added.output
    assert_same_in_every_mode(SearchIndex.load(tmp_path / "one"), SearchIndex.load(tmp_path / "s"), k=10)


def test_the_corpus_is_read_once_and_each_shard_is_its_documents_built_alone(encoder, tmp_path, monkeypatch):
    """One pass over the corpus for all shards, and each shard byte for byte the index of its own documents."""
    import siamsearch.build as build

    reads = []
    real = build.stream_corpus
    monkeypatch.setattr(build, "stream_corpus", lambda *a, **kw: reads.append(a[0]) or real(*a, **kw))
    build_sharded(SAMPLE_FAQ, tmp_path / "s", encoder, 5, kind="flat", text_column="question")
    assert reads == [SAMPLE_FAQ]
    folders = [f"shard-{i:03d}" for i in range(5)]
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == sorted([SHARD_MAP, *folders])  # no spill left
    import pandas as pd

    faq = pd.read_csv(SAMPLE_FAQ, sep="\t")
    for i in range(5):
        mine = faq[[shard_of(str(d), 5) == i for d in faq["id"]]]
        mine.to_csv(tmp_path / f"alone-{i}.tsv", sep="\t", index=False)
        build_index(tmp_path / f"alone-{i}.tsv", tmp_path / f"alone-{i}", encoder, kind="flat", text_column="question")
        shard = (tmp_path / "s" / f"shard-{i:03d}").glob("gen-*/*")
        alone = {p.name: p.read_bytes() for p in (tmp_path / f"alone-{i}").glob("gen-*/*") if p.is_file()}
        written = {p.name: p.read_bytes() for p in shard if p.is_file()}
        assert written.keys() == alone.keys() and len(written) > 5
        assert [n for n in written if written[n] != alone[n]] == [], i
