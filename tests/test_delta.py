"""A commit of a loaded index writes only the change: the base files are hard links to the
generation it was loaded from, the rows added since are a delta searched exactly beside
FAISS, and past its bound the delta is folded into a new base. Answers never depend on
which of these layouts holds the documents."""

import json
from pathlib import Path

import numpy as np
import pytest

from siamsearch import IndexDirectoryError, SearchIndex
from siamsearch.mutations import DELTA_MAX_ROWS

POOL = [f"{a}{b}" for a in ("退款", "发票", "快递", "会员", "积分", "订单") for b in
        ("多久到账", "怎么开", "什么时候到", "有什么用", "怎么查", "能取消吗", "写错了", "要几天")]
QUERIES = ["退款什么时候到", "发票开错了", "快递几天到", "会员积分"]
BASE_FILES = ("index.faiss", "vectors.npy", "documents.sqlite", "encoder/vocab.json", "encoder/encoder.onnx",
              "encoder/encoder.weights.h5")


def generation(path: Path) -> Path:
    return path / f"gen-{json.loads((path / 'manifest.json').read_text())['generation']:06d}"


def inodes(folder) -> dict:
    return {name: (folder / name).stat().st_ino for name in BASE_FILES}


def answers(index: SearchIndex, **where) -> list:
    return [[(h.id, h.score, h.metadata) for h in hits]
            for hits in index.search_batch(QUERIES, 8, where=where or None)]


def rebuilt(index: SearchIndex, kind: str) -> SearchIndex:
    """The same documents built afresh in memory: what every layout must answer like."""
    documents = list(index)
    return SearchIndex.build([d.text for d in documents], index.encoder, ids=[d.id for d in documents],
                             metadata=[d.metadata for d in documents], kind=kind)


@pytest.fixture
def saved(sample_encoder, tmp_path):
    path = tmp_path / "idx"
    SearchIndex.build(POOL[:40], sample_encoder, ids=[f"d{i}" for i in range(40)],
                      metadata=[{"n": i % 3} for i in range(40)], kind="flat").save(path)
    return path


@pytest.mark.parametrize("mmap", [True, False])
def test_a_commit_links_the_base_and_writes_only_the_change(saved, mmap):
    before = inodes(generation(saved))
    index = SearchIndex.load(saved, mmap=mmap)
    index.upsert(["退款多久能到账啊", "全新的问题"], ids=["d3", "n1"], metadata=[{"n": 1}, {"n": 1}])
    index.remove(["d5"])
    index.save(saved)

    folder = generation(saved)
    assert inodes(folder) == before  # the same files, not copies
    manifest = json.loads((saved / "manifest.json").read_text())
    assert {"delta.npy", "delta.sqlite"} <= set(manifest["files"])
    assert manifest["counts"] == {"documents": 40, "rows": 42}
    assert np.load(folder / "delta.npy").shape == (2, 64)

    loaded = SearchIndex.load(saved)
    assert (len(loaded), loaded.rows, loaded.tombstones) == (40, 42, 2)
    assert loaded.get("d3").text == "退款多久能到账啊" and loaded.get("d5") is None
    assert loaded.vectors.shape == (42, 64)
    expected = rebuilt(loaded, "flat")
    assert answers(loaded) == answers(expected)
    assert answers(loaded, n=1) == answers(expected, n=1)


def test_commits_chain_on_one_base_until_compact(saved):
    before = inodes(generation(saved))
    for i in range(3):  # loaded afresh for each change, as the service and the CLI do
        index = SearchIndex.load(saved, mmap=True)
        index.add([POOL[40 + i]], ids=[f"a{i}"])
        index.remove([f"d{i}"])
        index.save(saved)
        assert inodes(generation(saved)) == before
    for i in range(3, 5):  # one index changed and saved again and again
        index.add([POOL[40 + i]], ids=[f"a{i}"])
        index.remove([f"d{i}"])
        index.save(saved)
        assert inodes(generation(saved)) == before
    loaded = SearchIndex.load(saved)
    assert (len(loaded), loaded.rows) == (40, 45)
    assert answers(loaded) == answers(rebuilt(loaded, "flat"))

    loaded.compact()
    loaded.save(saved)
    folder = generation(saved)
    assert not (folder / "delta.npy").exists() and not (folder / "delta.sqlite").exists()
    assert inodes(folder)["index.faiss"] != before["index.faiss"]
    again = SearchIndex.load(saved)
    assert (len(again), again.rows) == (40, 40)
    assert answers(again) == answers(rebuilt(again, "flat"))


def test_a_delta_past_its_bound_is_folded_into_a_new_base(saved, sample_encoder):
    # the bound is the smaller of DELTA_MAX_ROWS and the base's rows (40 here)
    assert DELTA_MAX_ROWS > 40
    index = SearchIndex.load(saved, mmap=True)
    index.add(POOL[40:], ids=[f"a{i}" for i in range(len(POOL) - 40)])  # 8 rows: kept as a delta
    index.save(saved)
    assert (generation(saved) / "delta.npy").exists()

    index = SearchIndex.load(saved, mmap=True)
    index.add([f"新问题{i}" for i in range(33)], ids=[f"b{i}" for i in range(33)])  # 8 + 33 > 40: folded
    index.save(saved)
    folder = generation(saved)
    assert not (folder / "delta.npy").exists()
    loaded = SearchIndex.load(saved)
    assert (len(loaded), loaded.rows) == (81, 81)
    assert answers(loaded) == answers(rebuilt(loaded, "flat"))


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_kinds_find_rows_of_the_delta(sample_encoder, tmp_path, kind):
    path = tmp_path / kind
    SearchIndex.build(POOL[:40], sample_encoder, kind=kind).save(path)
    index = SearchIndex.load(path, mmap=True)
    index.add(POOL[40:], ids=[f"a{i}" for i in range(len(POOL) - 40)])
    index.save(path)
    loaded = SearchIndex.load(path, mmap=True)
    for i, hits in enumerate(loaded.search_batch(POOL[40:], 10)):
        assert f"a{i}" in [h.id for h in hits if h.score == 1.0]  # found, whatever FAISS's lists hold


def test_a_damaged_delta_is_refused(saved):
    index = SearchIndex.load(saved)
    index.add(["全新的问题"], ids=["n1"])
    index.save(saved)
    delta = generation(saved) / "delta.npy"
    data = bytearray(delta.read_bytes())
    data[-1] ^= 0xFF
    delta.write_bytes(bytes(data))
    with pytest.raises(IndexDirectoryError, match="delta.npy does not match the checksum"):
        SearchIndex.load(saved)
    delta.unlink()
    with pytest.raises(IndexDirectoryError, match="delta.npy is missing"):
        SearchIndex.load(saved)
