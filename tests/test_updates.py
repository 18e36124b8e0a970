"""Incremental updates: add / upsert / remove / compact, and their equality with a fresh build."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siamsearch import SearchIndex
from siamsearch.errors import ConflictError, InputError, SiamsearchError
from siamsearch.storage import writer_lock

POOL = ["怎么退货", "如何退款", "退款多久到账", "运费怎么算", "能开发票吗", "怎么取消订单", "修改收货地址",
        "会员有什么好处", "积分怎么用", "联系人工客服", "账号被盗了", "密码忘了", "Refund status?", "发票抬头写错了",
        "快递一直不更新", "优惠券过期了", "怎么注销账户", "支付失败怎么办", "能分期吗", "换货要多久"]
QUERIES = ["退款什么时候到", "发票", "客服电话", "快递"]


def fresh(encoder, state: dict[str, tuple[str, dict]], kind: str) -> SearchIndex | None:
    if not state:
        return None
    ids = sorted(state)
    return SearchIndex.build([state[i][0] for i in ids], encoder, ids=ids, metadata=[state[i][1] for i in ids],
                             kind=kind)


def answers(index: SearchIndex | None, k: int = 5) -> list:
    if index is None:
        return [[] for _ in QUERIES]
    return index.search_batch(QUERIES, k)


@pytest.fixture(scope="module")
def base(sample_encoder):
    return SearchIndex.build(POOL[:6], sample_encoder, ids=[f"d{i}" for i in range(6)])


def test_add_upsert_remove_len(base, sample_encoder):
    index = SearchIndex.build(POOL[:6], sample_encoder, ids=[f"d{i}" for i in range(6)])
    assert index.add(["新文档"]) == ["0"]  # non-numeric ids so far: new ids start at 0
    assert index.add(["又一个", "再一个"]) == ["1", "2"]
    with pytest.raises(InputError, match="'d1' already exists; use upsert"):
        index.add(["x"], ids=["d1"])
    assert index.upsert(["改过的文本", "全新"], ids=["d1", "n1"], metadata=[{"v": 2}, {}]) == 1
    assert len(index) == 10 and index.rows == 11 and index.tombstones == 1
    assert index.remove(["d0", "n1"]) == 2 and len(index) == 8
    with pytest.raises(InputError, match="no document with id 'zz'; nothing was removed"):
        index.remove(["d2", "zz"])
    assert len(index) == 8
    hit = index.search("改过的文本", 1)[0]
    assert (hit.id, hit.metadata, hit.score) == ("d1", {"v": 2}, 1.0)


def test_tombstones_never_come_back_and_compact_drops_them(sample_encoder):
    for kind in ("flat", "hnsw"):
        index = SearchIndex.build(POOL, sample_encoder, kind=kind)
        index.remove([str(i) for i in range(0, 20, 2)])
        before = index.search_batch(QUERIES, 10)
        assert all(int(h.id) % 2 for hits in before for h in hits)
        assert all(len(hits) == 10 for hits in before)  # enough candidates despite the tombstones
        assert index.compact() == 10 and index.rows == 10 and index.tombstones == 0
        assert index.search_batch(QUERIES, 10) == before


def test_default_ids_continue_after_the_largest_numeric_id(sample_encoder):
    index = SearchIndex.build(["a", "b"], sample_encoder, ids=["7", "x"])
    assert index.add(["c"]) == ["8"]


@pytest.mark.parametrize("bad", ["a\tb", "line\nbreak", "", "  ", "nul\x00"])
def test_ids_must_be_one_line(sample_encoder, bad):
    with pytest.raises(InputError, match="ids must be one line"):
        SearchIndex.build(["text"], sample_encoder, ids=[bad])


def test_removing_everything_then_searching(sample_encoder, tmp_path):
    index = SearchIndex.build(["a", "b"], sample_encoder)
    index.remove(["0", "1"])
    assert index.search("a", 3) == []
    index.save(tmp_path / "empty")
    assert len(SearchIndex.load(tmp_path / "empty")) == 0


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=3)),
        st.tuples(st.just("upsert"), st.lists(st.tuples(st.integers(0, 7), st.integers(0, len(POOL) - 1)),
                                              min_size=1, max_size=3, unique_by=lambda t: t[0])),
        st.tuples(st.just("remove"), st.integers(0, 100)),
        st.tuples(st.just("compact"), st.none()),
        st.tuples(st.just("save"), st.booleans()),  # reopen memory-mapped or not
    ),
    max_size=8,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, kind=st.sampled_from(["flat", "hnsw", "ivf"]))
def test_any_sequence_of_changes_equals_a_fresh_build(sample_encoder, tmp_path_factory, ops, kind):
    path = tmp_path_factory.mktemp("prop") / "idx"
    index = SearchIndex.build(POOL[:5], sample_encoder, kind=kind)
    state = {str(i): (POOL[i], {}) for i in range(5)}
    for op, arg in ops:
        if op == "add":
            texts = [POOL[i] for i in arg]
            for doc_id, text in zip(index.add(texts), texts):
                state[doc_id] = (text, {})
        elif op == "upsert":
            ids, texts = [f"u{i}" for i, _ in arg], [POOL[j] for _, j in arg]
            index.upsert(texts, ids, [{"n": j} for _, j in arg])
            state.update({i: (t, {"n": j}) for i, t, (_, j) in zip(ids, texts, arg)})
        elif op == "remove" and state:
            victim = sorted(state)[arg % len(state)]
            index.remove([victim])
            del state[victim]
        elif op == "compact":
            index.compact()
        elif op == "save":
            index.save(path)
            index = SearchIndex.load(path, mmap=arg)
    assert len(index) == len(state)
    assert answers(index) == answers(fresh(sample_encoder, state, kind))


def test_a_stale_writer_cannot_undo_another_writers_commit(base, tmp_path):
    base.save(tmp_path / "idx")
    first, second = SearchIndex.load(tmp_path / "idx"), SearchIndex.load(tmp_path / "idx")
    first.add(["第一个写入者"])
    first.save(tmp_path / "idx")
    second.add(["第二个写入者"])
    with pytest.raises(ConflictError, match="another writer changed it since it was loaded"):
        second.save(tmp_path / "idx")
    assert len(SearchIndex.load(tmp_path / "idx")) == 7


def test_a_held_writer_lock_refuses_a_second_writer(base, tmp_path):
    base.save(tmp_path / "idx")
    with writer_lock(tmp_path / "idx"):
        with pytest.raises(SiamsearchError, match="another process is writing it"):
            SearchIndex.load(tmp_path / "idx").save(tmp_path / "idx")


def test_manifest_counts_rows_and_documents(base, tmp_path):
    base.save(tmp_path / "idx")
    index = SearchIndex.load(tmp_path / "idx")
    index.remove(["d0"])
    index.save(tmp_path / "idx")
    counts = json.loads((tmp_path / "idx" / "manifest.json").read_text())["counts"]
    assert counts == {"documents": 5, "rows": 6}
    assert SearchIndex.load(tmp_path / "idx").vectors.shape == (6, 64)
