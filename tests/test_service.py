"""The HTTP service: routes against the library, tokens, writes and readers, workers."""

from __future__ import annotations

import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from siamsearch import Encoder, InputError, SearchIndex, read_corpus
from siamsearch.cli import main
from siamsearch.demo import SAMPLE_FAQ
from siamsearch.service import MAX_K, Settings, create_app, token_digest

from .serving import TOKEN, running

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def faq_dir(tmp_path_factory):
    """The demo FAQ indexed with the shipped model, as ``siamsearch demo`` builds it."""
    faq = read_corpus(SAMPLE_FAQ, text_column="question")
    path = tmp_path_factory.mktemp("service") / "faq"
    SearchIndex.build(faq.texts, Encoder.load(), ids=faq.ids, metadata=faq.metadata).save(path)
    return path


@pytest.fixture
def index_dir(faq_dir, tmp_path):
    """A copy each test may change."""
    return shutil.copytree(faq_dir, tmp_path / "faq")


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokens") / "write.token"
    path.write_text(TOKEN + "\n")
    return path


def client(index_dir, token_file=None, read_token_file=None) -> TestClient:
    return TestClient(create_app(Settings(str(index_dir), token_file and token_digest(token_file),
                                          read_token_file and token_digest(read_token_file))))


def test_health_readiness_openapi_docs_and_page(faq_dir):
    http = client(faq_dir)
    assert http.get("/healthz").json()["status"] == "ok"
    ready = http.get("/readyz").json()
    index = SearchIndex.load(faq_dir)
    assert ready | {"version": None} == {"status": "ready", "generation": index.generation, "documents": 200,
                                         "encoder_fingerprint": index.encoder.fingerprint, "index_kind": "flat",
                                         "modes": ["dense", "lexical", "hybrid"], "version": None}
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/v1/search", "/v1/search/batch", "/v1/documents/{doc_id}", "/v1/documents", "/v1/compact",
            "/healthz", "/readyz", "/metrics"} <= set(paths)
    assert set(paths["/v1/documents"]) == {"put", "delete"}
    for route in ("/docs", "/redoc"):  # issue 36, point 4: every asset from this service, none from a CDN
        html = http.get(route).text
        assets = re.findall(r'(?:src|href|spec-url)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
        assert len(assets) >= 2 and "//" not in " ".join(assets), assets
        for asset in assets:
            answer = http.get(asset)
            assert answer.status_code == 200 and answer.content, asset
    page = http.get("/")
    assert page.headers["content-type"].startswith("text/html") and '<meta charset="utf-8">' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing fetched from elsewhere


@pytest.mark.parametrize("where", [None, {"topic": "退款"}, {"topic": ["订单", "物流"]}])
def test_hits_are_exactly_the_library_s(faq_dir, where):
    http, index = client(faq_dir), SearchIndex.load(faq_dir)
    queries = ["退款多久到账", "怎么开发票", "快递到哪了"]
    for query in queries:
        got = http.post("/v1/search", json={"query": query, "k": 5, "filter": where}).json()
        expected = [h.to_dict() for h in index.search(query, 5, where=where)]
        assert got["hits"] == expected and got["query"] == query and got["generation"] == index.generation
    batch = http.post("/v1/search/batch", json={"queries": queries, "k": 3, "filter": where}).json()
    assert [r["hits"] for r in batch["results"]] == [[h.to_dict() for h in hits]
                                                     for hits in index.search_batch(queries, 3, where=where)]


def test_score_is_the_model_s_pair_prediction(faq_dir):
    http, encoder = client(faq_dir), Encoder.load()
    for hit in http.post("/v1/search", json={"query": "怎么改收货地址", "k": 5}).json()["hits"]:
        assert hit["score"] == pytest.approx(encoder.similarity("怎么改收货地址", hit["text"]), rel=1e-5)


def test_writes_need_the_write_token(index_dir, token_file, tmp_path):
    doc = {"documents": [{"id": "new-1", "text": "可以用花呗付款吗", "metadata": {"topic": "支付"}}]}
    refused = client(index_dir).put("/v1/documents", json=doc)
    assert refused.status_code == 403 and "takes no writes" in refused.json()["error"]["message"]
    http = client(index_dir, token_file)
    assert http.put("/v1/documents", json=doc).status_code == 401
    assert http.put("/v1/documents", json=doc, headers={"Authorization": "Bearer nope"}).status_code == 403
    assert http.post("/v1/compact").status_code == 401
    assert http.request("DELETE", "/v1/documents", json={"ids": ["faq-001"]}).status_code == 401
    assert SearchIndex.load(index_dir).get("new-1") is None  # nothing was written
    assert http.post("/v1/search", json={"query": "退款"}).status_code == 200  # reads stay open
    read_token = tmp_path / "read.token"
    read_token.write_text("a-read-token-of-some-length")
    closed = client(index_dir, token_file, read_token)
    assert closed.post("/v1/search", json={"query": "退款"}).status_code == 401
    assert closed.post("/v1/search", json={"query": "退款"},
                       headers={"Authorization": "Bearer a-read-token-of-some-length"}).status_code == 200
    assert closed.get("/readyz").status_code == 200  # probes stay open


@pytest.mark.parametrize("content, message", [("short", "at least 16 characters"),
                                              ("two words here ok!", "without spaces"), ("", "at least 16")])
def test_token_files_are_checked(tmp_path, content, message):
    path = tmp_path / "t"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        token_digest(path)
    with pytest.raises(InputError, match=r"missing: no such file"):
        token_digest(tmp_path / "missing")


def test_upsert_get_delete_compact(index_dir, token_file):
    http = client(index_dir, token_file)
    start = http.get("/readyz").json()["generation"]
    put = http.put("/v1/documents", headers=AUTH, json={"documents": [
        {"id": "new-1", "text": "可以用花呗付款吗", "metadata": {"topic": "支付"}},
        {"id": "faq-001", "text": "怎么注册账号呀", "metadata": {"topic": "账户"}}]})
    assert put.json() == {"generation": start + 1, "documents": 201, "changed": 1}
    assert SearchIndex.load(index_dir).generation == start + 1  # committed before it was answered
    assert http.get("/v1/documents/new-1").json() == {"id": "new-1", "text": "可以用花呗付款吗",
                                                      "metadata": {"topic": "支付"}}
    hits = http.post("/v1/search", json={"query": "可以用花呗付款吗", "k": 1}).json()
    assert hits["hits"][0]["id"] == "new-1" and hits["generation"] == start + 1
    missing = http.request("DELETE", "/v1/documents", headers=AUTH, json={"ids": ["new-1", "nope"]})
    assert missing.status_code == 404 and "'nope'" in missing.json()["error"]["message"]
    assert http.get("/v1/documents/new-1").status_code == 200  # all or nothing
    gone = http.request("DELETE", "/v1/documents", headers=AUTH, json={"ids": ["new-1"]}).json()
    assert gone == {"generation": start + 2, "documents": 200, "changed": 1}
    assert http.get("/v1/documents/new-1").status_code == 404
    assert http.post("/v1/compact", headers=AUTH).json() == {"generation": start + 3, "documents": 200, "changed": 2}


def test_a_stored_document_longer_than_a_request_may_send_is_still_returned(index_dir):
    index = SearchIndex.load(index_dir)
    index.add(["长" * 20_000], ids=["long"])
    index.save(index_dir)
    found = client(index_dir).get("/v1/documents/long")
    assert found.status_code == 200 and len(found.json()["text"]) == 20_000


def test_a_commit_by_another_process_is_picked_up_without_a_restart(index_dir, tmp_path):
    http = client(index_dir)
    before = http.get("/readyz").json()["generation"]
    corpus = tmp_path / "more.tsv"
    corpus.write_text("id\ttext\nx-1\t会员积分怎么兑换礼品\n", encoding="utf-8")
    assert CliRunner().invoke(main, ["add", "--index", str(index_dir), str(corpus)]).exit_code == 0
    assert http.get("/readyz").json()["generation"] == before + 1
    assert http.post("/v1/search", json={"query": "会员积分怎么兑换礼品", "k": 1}).json()["hits"][0]["id"] == "x-1"


def test_concurrent_writes_are_serialised_and_none_is_lost(index_dir, token_file):
    http = client(index_dir, token_file)
    start = http.get("/readyz").json()["generation"]

    def put(n: int) -> int:
        docs = [{"id": f"w{n}-{i}", "text": f"第{n}批的第{i}个问题", "metadata": {"batch": n}} for i in range(5)]
        response = http.put("/v1/documents", headers=AUTH, json={"documents": docs})
        assert response.status_code == 200, response.text
        return response.json()["generation"]

    with ThreadPoolExecutor(8) as pool:
        generations = list(pool.map(put, range(8)))
    assert sorted(generations) == list(range(start + 1, start + 9))
    index = SearchIndex.load(index_dir)
    assert len(index) == 240 and all(index.get(f"w{n}-{i}") for n in range(8) for i in range(5))


def test_readers_answer_from_the_committed_generation_while_a_write_commits(index_dir, token_file):
    http = client(index_dir, token_file)
    start = http.get("/readyz").json()["generation"]
    docs = [{"id": f"bulk-{i}", "text": f"批量导入的第{i}条常见问题", "metadata": {}} for i in range(3000)]
    writing, seen = threading.Event(), []

    def write() -> None:
        writing.set()
        assert http.put("/v1/documents", headers=AUTH, json={"documents": docs}).status_code == 200
        writing.clear()

    writer = threading.Thread(target=write)
    writer.start()
    writing.wait(5)
    while writing.is_set():
        started = time.perf_counter()
        found = http.post("/v1/search", json={"query": "批量导入的第7条常见问题", "k": 1}).json()
        seen.append((found["generation"], found["hits"][0]["id"], time.perf_counter() - started))
    writer.join()
    during = [s for s in seen if s[0] == start]
    assert during, "no search was answered while the write was being committed"
    assert all(not hit.startswith("bulk-") for _, hit, _ in during)  # nothing uncommitted was read
    after = http.post("/v1/search", json={"query": "批量导入的第7条常见问题", "k": 1}).json()
    assert after["hits"][0]["id"] == "bulk-7" and after["generation"] == start + 1


def test_metrics(faq_dir):
    http = client(faq_dir)
    http.post("/v1/search", json={"query": "退款"})
    http.post("/v1/search", json={"query": " "})
    text = http.get("/metrics").text
    assert 'siamsearch_requests_total{endpoint="/v1/search",status="200"} 1.0' in text
    assert 'siamsearch_requests_total{endpoint="/v1/search",status="422"} 1.0' in text
    for stage in ("encode", "candidates", "rerank"):
        assert f'siamsearch_search_stage_seconds_count{{stage="{stage}"}} 1.0' in text
    assert "siamsearch_documents 200.0" in text and 'siamsearch_request_seconds_bucket{endpoint="/v1/search"' in text


def test_k_limit_is_documented_in_the_schema(faq_dir):
    schema = client(faq_dir).get("/openapi.json").json()["components"]["schemas"]["SearchRequest"]
    assert schema["properties"]["k"]["maximum"] == MAX_K


def test_two_workers_serve_reads_and_writes(index_dir, token_file):
    with running(index_dir, token_file, workers=2) as url:
        pids = {httpx.get(f"{url}/healthz").json()["pid"] for _ in range(40)}
        assert len(pids) == 2, pids

        def put(n: int) -> int:
            docs = [{"id": f"w{n}", "text": f"两个进程写入的第{n}个问题", "metadata": {}}]
            response = httpx.put(f"{url}/v1/documents", headers=AUTH, json={"documents": docs}, timeout=60)
            assert response.status_code == 200, response.text
            return response.json()["generation"]

        with ThreadPoolExecutor(6) as pool:
            generations = list(pool.map(put, range(12)))
        assert len(set(generations)) == 12  # one commit each, none lost
        last = max(generations)
        with httpx.Client() as http:  # every worker has moved on to the last commit
            answers = [http.post(f"{url}/v1/search", json={"query": "两个进程写入的第3个问题", "k": 1}).json()
                       for _ in range(40)]
        assert {a["generation"] for a in answers} == {last} and {a["hits"][0]["id"] for a in answers} == {"w3"}
    assert len(SearchIndex.load(index_dir)) == 212


def test_searches_from_many_threads_are_answered_together_and_exactly(faq_dir):
    """LiveIndex coalesces concurrent searches into shared search_batch calls; every thread
    still gets exactly its own answer, and a bad query fails only its own search."""
    from siamsearch import LiveIndex

    live, index = LiveIndex(faq_dir), SearchIndex.load(faq_dir)
    faq = read_corpus(SAMPLE_FAQ, text_column="question")
    cases = [([text], k, where) for text in faq.texts[:60] for k, where in ((3, None), (5, {"topic": "退款"}))]
    calls, first = [], threading.Event()

    def observe(stage: str, seconds: float) -> None:
        if stage == "encode":
            calls.append(seconds)
            if not first.is_set():
                first.set()
                time.sleep(0.3)  # let the other threads queue up behind the first search

    def run(case):
        queries, k, where = case
        return live.search_batch(queries, k, where, observe)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(run, cases))
        bad = pool.submit(live.search_batch, ["  "], 3)
        good = pool.submit(live.search_batch, ["退款多久到账"], 3)
        with pytest.raises(InputError, match="empty or whitespace"):
            bad.result()
        assert good.result()[1] == [index.search("退款多久到账", 3)]
    for (queries, k, where), (generation, hits) in zip(cases, answers):
        assert generation == index.generation and hits == index.search_batch(queries, k, where)
    assert len(calls) < len(cases)  # some searches shared a batch


def test_serve_refuses_a_missing_index_or_a_bad_token_file_in_one_line(tmp_path, faq_dir):
    run = CliRunner().invoke(main, ["serve", "--index", str(tmp_path / "nothing")])
    assert run.exit_code == 1 and run.output.count("\n") == 1 and "no such index" in run.output
    (tmp_path / "short.token").write_text("abc")
    run = CliRunner().invoke(main, ["serve", "--index", str(faq_dir), "--token-file", str(tmp_path / "short.token")])
    assert run.exit_code == 1 and "at least 16 characters" in run.output and "Traceback" not in run.output


def test_demo_serve_builds_the_demo_and_serves_it(tmp_path):
    import subprocess
    import sys

    from .serving import free_port, stop

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "siamsearch", "demo", "--workdir", str(tmp_path), "--serve",
                                "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True, text=True)
    try:
        for line in process.stdout:  # the banner names the URL once the index is built
            if line.startswith("serving"):
                break
        assert f"http://127.0.0.1:{port}/" in line
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = httpx.post(f"http://127.0.0.1:{port}/v1/search", json={"query": "退款多久能到账", "k": 1})
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the demo server did not answer"
                time.sleep(0.1)
        assert answer.json()["hits"][0]["id"] == "faq-101"
        assert "<title>siamsearch</title>" in httpx.get(f"http://127.0.0.1:{port}/").text
    finally:
        stop(process)
    assert (tmp_path / "indexes" / "demo" / "manifest.json").exists()


def test_hits_carry_match_and_min_match_filters_over_http(faq_dir):
    http = client(faq_dir)
    hits = http.post("/v1/search", json={"query": "我的退款什么时候能到账啊", "k": 10}).json()["hits"]
    assert all(0 < h["match"] < 1 for h in hits)
    kept = http.post("/v1/search", json={"query": "我的退款什么时候能到账啊", "k": 10, "min_match": 0.5}).json()["hits"]
    assert kept == [h for h in hits if h["match"] >= 0.5] and kept
    assert http.post("/v1/search", json={"query": "退款", "min_match": 1.5}).status_code == 422


def test_a_query_longer_than_the_model_reads_gets_a_note(faq_dir):
    answer = client(faq_dir).post("/v1/search", json={"query": "怎么改收货地址" * 20, "k": 3}).json()
    assert answer["note"] == "the model reads the first 100 of this query's 140 characters" and answer["hits"]
    assert "note" not in client(faq_dir).post("/v1/search", json={"query": "怎么改收货地址", "k": 3}).json()
