"""A sharded index served on Ray Serve (cluster.py), on a two-node Ray cluster on 127.0.0.1
that these tests start and stop: over HTTP it answers as one unsharded index of the same
documents does, for every kind and search mode, through writes; killing shard replicas never gives a wrong
answer (a shard with none answers 503 naming it); killing the coordinator loses no
acknowledged write; and ``siamsearch serve --ray`` serves one."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from siamsearch import Encoder, SearchIndex
from siamsearch.build import build_index
from siamsearch.demo import SAMPLE_FAQ
from siamsearch.fusion import MODES
from siamsearch.service import Settings, token_digest
from siamsearch.shards import build_sharded

from .processes import LOOPBACK, descendants, listening_addresses
from .serving import TOKEN, free_port

QUERIES = ["怎么注册账号", "退款多久到账", "发票怎么开", "运费谁出", "忘记密码怎么办", "会员", "怎么退货退款"]
KINDS = {"flat": {}, "hnsw": {}, "ivf": {"nlist": 8, "nprobe": 8}}  # every list probed: one index's candidates
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes on this machine: the head with one logical CPU, the other with four, so
    that replicas (half a CPU each) land on both."""
    if "ray" not in sys.modules:  # see test_build's ray_cluster: keeps every node on 127.0.0.1
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray = pytest.importorskip("ray", reason="serving on Ray needs pip install 'siamsearch[ray]' (in the test extras)")
    pytest.importorskip("ray.serve", reason="serving on Ray needs ray[serve]: pip install 'siamsearch[ray]'")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                          "include_dashboard": False})
    nodes.add_node(num_cpus=4, node_ip_address="127.0.0.1")
    ray.init(address=nodes.address, log_to_driver=False, logging_level=logging.WARNING)
    logging.getLogger("ray.serve").setLevel(logging.ERROR)
    nodes.serve_port = free_port()  # Serve keeps the address it first started with, so one for the module
    yield nodes
    from ray import serve

    serve.shutdown()
    ray.shutdown()
    nodes.shutdown()


@pytest.fixture(scope="module")
def encoder():
    return Encoder.load()


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("token") / "write.token"
    path.write_text(TOKEN)
    return path


def serving(cluster, path, token_file, **options):
    from siamsearch.cluster import deploy

    options = {"replica_cpus": 0.5, **options}
    return deploy(Settings(str(path), token_digest(token_file)), port=cluster.serve_port, **options)


def search(url: str, queries: list[str], **body) -> list[list[tuple]]:
    response = httpx.post(url + "v1/search/batch", json={"queries": queries, **body}, timeout=60)
    assert response.status_code == 200, response.text
    return [[(h["id"], h["score"], h["match"], h.get("lexical", np.nan), h.get("rank_score", np.nan))
             for h in r["hits"]] for r in response.json()["results"]]


def assert_same(one: SearchIndex, url: str, **options) -> None:
    """Ids in the same order; score, match and, in lexical and hybrid mode, BM25 and rank score within 1e-6."""
    served = search(url, QUERIES, **options)
    expected = [[(h.id, h.score, h.match, np.nan if h.lexical is None else h.lexical,
                  np.nan if h.rank_score is None else h.rank_score) for h in hits]
                for hits in one.search_batch(QUERIES, options.get("k", 10), options.get("filter"),
                                             min_match=options.get("min_match"), mode=options.get("mode", "dense"))]
    assert [[h[0] for h in q] for q in served] == [[h[0] for h in q] for q in expected], options
    assert any(served), options
    for a, b in zip(served, expected):
        for field in range(1, 5):
            np.testing.assert_allclose([h[field] for h in a], [h[field] for h in b], rtol=0, atol=1e-6)


def assert_same_in_every_mode(one: SearchIndex, url: str, **options) -> None:
    for mode in MODES:
        assert_same(one, url, mode=mode, **options)


def test_the_cluster_has_two_nodes_on_loopback_only(cluster):
    import ray

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    addresses = listening_addresses(os.getpid())
    assert addresses and addresses <= LOOPBACK, addresses


def test_a_deployment_the_cluster_has_no_cpus_for_is_refused_in_one_line(cluster, encoder, token_file, tmp_path):
    from siamsearch import InputError

    build_sharded(SAMPLE_FAQ, tmp_path / "sharded", encoder, 2, text_column="question")
    with pytest.raises(InputError, match=r"^3 replicas .* need 30 CPUs, the cluster has 5: give each less") as e:
        serving(cluster, tmp_path / "sharded", token_file, replica_cpus=10)
    assert e.value.argument == "replica_cpus"


@pytest.mark.parametrize("kind", KINDS)
def test_the_cluster_answers_as_one_index_through_writes(cluster, encoder, token_file, tmp_path, kind):
    from siamsearch.cluster import undeploy

    build_index(SAMPLE_FAQ, tmp_path / "one", encoder, kind=kind, text_column="question", **KINDS[kind])
    build_sharded(SAMPLE_FAQ, tmp_path / "sharded", encoder, 2, kind=kind, text_column="question", **KINDS[kind])
    one = SearchIndex.load(tmp_path / "one")
    url = serving(cluster, tmp_path / "sharded", token_file).url
    try:
        ready = httpx.get(url + "readyz").json()
        assert ready["documents"] == 200 and ready["index_kind"] == kind and ready["modes"] == list(MODES)
        for options in ({"k": 10}, {"k": 1}, {"k": 100}, {"k": 5, "filter": {"topic": "退款"}},
                        {"k": 5, "filter": {"topic": ["账户", "发票"]}}, {"k": 10, "min_match": 0.4}):
            assert_same_in_every_mode(one, url, **options)
        single = httpx.post(url + "v1/search", json={"query": QUERIES[1], "k": 3}).json()
        assert [h["id"] for h in single["hits"]] == [h.id for h in one.search(QUERIES[1], k=3)]
        assert httpx.get(url + "v1/documents/faq-007").json()["text"] == one.get("faq-007").text

        # the same writes to both: new ids, a replaced one, removals, then compact
        documents = [{"id": "new-1", "text": "退款到账要几天", "metadata": {"topic": "退款"}},
                     {"id": "new-2", "text": "发票能不能重开", "metadata": {"topic": "发票"}},
                     {"id": "faq-010", "text": "会员怎么续费才便宜", "metadata": {"topic": "会员"}}]
        put = httpx.put(url + "v1/documents", json={"documents": documents}, headers=AUTH, timeout=60)
        assert put.status_code == 200 and put.json()["changed"] == 1 and put.json()["documents"] == 202, put.text
        one.upsert([d["text"] for d in documents], [d["id"] for d in documents], [d["metadata"] for d in documents])
        gone = httpx.request("DELETE", url + "v1/documents", json={"ids": ["faq-001", "faq-150", "new-2"]},
                             headers=AUTH, timeout=60)
        assert gone.status_code == 200 and gone.json()["documents"] == 199, gone.text
        one.remove(["faq-001", "faq-150", "new-2"])
        missing = httpx.request("DELETE", url + "v1/documents", json={"ids": ["faq-002", "no-such-id"]},
                                headers=AUTH)
        assert missing.status_code == 404 and "no-such-id" in missing.json()["error"]["message"]
        assert httpx.get(url + "v1/documents/faq-002").status_code == 200  # all or nothing
        assert httpx.put(url + "v1/documents", json={"documents": documents}).status_code == 401
        for options in ({"k": 10}, {"k": 5, "filter": {"topic": "退款"}}):
            assert_same_in_every_mode(one, url, **options)
        committed = SearchIndex.load(tmp_path / "sharded")  # what the shards committed, read here
        assert len(committed) == 199 and committed.get("new-1").text == "退款到账要几天"
        assert httpx.post(url + "v1/compact", headers=AUTH, timeout=60).json()["changed"] == one.compact() == 4
        assert_same_in_every_mode(one, url, k=10)
        unknown = httpx.post(url + "v1/search", json={"query": "x", "filter": {"nofield": 1}})
        assert unknown.status_code == 400 and "nofield" in unknown.json()["error"]["message"]
        hybrid = httpx.post(url + "v1/search", json={"query": "x", "filter": {"nofield": 1}, "mode": "hybrid"})
        assert hybrid.status_code == 400 and "nofield" in hybrid.json()["error"]["message"]
        assert "siamsearch_requests" in httpx.get(url + "metrics").text
        assert httpx.get(url).status_code == 200  # the page
    finally:
        undeploy()


# -- faults ------------------------------------------------------------------------------------
def replica_pids(deployment: str) -> list[int]:
    """The live replicas of a deployment: Ray titles each actor's process by its class."""
    title = f"ServeReplica:siamsearch:{deployment}".encode()
    found = []
    for pid in descendants(os.getpid()):
        try:
            alive = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"Z"
            if alive and title in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:  # ended meanwhile
            continue
    return found


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def wait_running(deployment: str, replicas: int, timeout_s: float = 120) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve.status().applications["siamsearch"].deployments[deployment]
        if status.replica_states.get("RUNNING", 0) == replicas and len(replica_pids(deployment)) == replicas:
            return
        time.sleep(0.2)
    raise AssertionError(f"{deployment} did not come back to {replicas} replicas")


class Searching:
    """Searches over HTTP on a thread until stopped, keeping every answer's status and hits."""

    def __init__(self, url: str):
        self.url, self.answers, self._stop = url, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                response = client.post(self.url + "v1/search/batch", json={"queries": QUERIES, "k": 10})
                is_json = response.headers.get("content-type", "").startswith("application/json")
                self.answers.append((response.status_code, response.json() if is_json else response.text))

    def stop(self) -> list[tuple[int, dict]]:
        self._stop.set()
        self.thread.join(60)
        return self.answers


def test_killed_shard_replicas_never_give_a_wrong_answer(cluster, encoder, token_file, tmp_path):
    """Five trials kill one replica of a shard while searches run: the other answers. Then
    both of a shard's replicas are killed: until one is back, 503 naming the shard."""
    from siamsearch.cluster import undeploy

    build_index(SAMPLE_FAQ, tmp_path / "one", encoder, kind="flat", text_column="question")
    build_sharded(SAMPLE_FAQ, tmp_path / "sharded", encoder, 2, kind="flat", text_column="question")
    one = SearchIndex.load(tmp_path / "one")
    url = serving(cluster, tmp_path / "sharded", token_file, replicas=2, shard_timeout_s=1.0).url
    try:
        raylets = {node.all_processes["raylet"][0].process.pid for node in [cluster.head_node, *cluster.worker_nodes]}
        parents = {parent_of(pid) for name in ("shard-000", "shard-001", "coordinator") for pid in replica_pids(name)}
        assert parents <= raylets and len(parents) == 2  # replicas on both nodes
        written = [{"id": f"kept-{i}", "text": text} for i, text in enumerate(["退款到账要几天", "发票能不能重开"])]
        put = httpx.put(url + "v1/documents", json={"documents": written}, headers=AUTH, timeout=60)
        assert put.status_code == 200, put.text
        one.upsert([d["text"] for d in written], [d["id"] for d in written])
        expected = [[(h.id, h.score) for h in hits] for hits in one.search_batch(QUERIES, 10)]
        assert any(i.startswith("kept-") for q in expected for i, _ in q)  # the write shows in the answers
        for trial in range(5):
            deployment = f"shard-00{trial % 2}"
            searching = Searching(url)
            time.sleep(0.3)
            os.kill(replica_pids(deployment)[0], signal.SIGKILL)
            wait_running(deployment, 2)
            time.sleep(0.3)
            answers = searching.stop()
            ok = [body for status, body in answers if status == 200]
            assert len(ok) > 3, answers[:3]
            for status, body in answers:
                assert status in (200, 503), (status, body)
                if status == 503:
                    assert f"shard {trial % 2} ({deployment})" in body["error"]["message"], body
            for body in ok:
                got = [[(h["id"], h["score"]) for h in r["hits"]] for r in body["results"]]
                assert [[i for i, _ in q] for q in got] == [[i for i, _ in q] for q in expected]
                np.testing.assert_allclose([s for q in got for _, s in q], [s for q in expected for _, s in q],
                                           rtol=0, atol=1e-6)

        searching = Searching(url)
        for pid in replica_pids("shard-001"):
            os.kill(pid, signal.SIGKILL)
        wait_running("shard-001", 2)
        time.sleep(0.5)
        answers = searching.stop()
        unavailable = [body for status, body in answers if status == 503]
        assert unavailable and all("shard 1 (shard-001) did not answer" in b["error"]["message"]
                                   for b in unavailable), answers[:3]
        assert {status for status, _ in answers} <= {200, 503}
        assert answers[-1][0] == 200  # back, and serving the committed state
        assert_same(one, url, k=10)
    finally:
        undeploy()


class Writing:
    """Three threads writing one new document per request until stopped; keeps what was acknowledged."""

    def __init__(self, url: str, prefix: str):
        self.url, self.prefix, self._stop = url, prefix, threading.Event()
        self.sent: set[str] = set()
        self.acknowledged: dict[str, str] = {}
        self.refused = 0
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(3)]
        for thread in self.threads:
            thread.start()

    def _run(self, writer: int) -> None:
        with httpx.Client(timeout=60) as client:
            n = 0
            while not self._stop.is_set():
                doc_id, text = f"{self.prefix}-{writer}-{n}", f"第{writer}个写者的第{n}个问题怎么退款"
                n += 1
                self.sent.add(doc_id)
                try:
                    response = client.put(self.url + "v1/documents", headers=AUTH,
                                          json={"documents": [{"id": doc_id, "text": text}]})
                except httpx.HTTPError:
                    self.refused += 1  # not acknowledged
                    continue
                if response.status_code == 200:
                    self.acknowledged[doc_id] = text
                else:
                    self.refused += 1

    def stop(self) -> None:
        self._stop.set()
        for thread in self.threads:
            thread.join(60)


def test_a_killed_coordinator_loses_no_acknowledged_write(cluster, encoder, token_file, tmp_path):
    """Five trials: three clients write while one of the two coordinator replicas is killed
    (trials 1 and 3: both); every write answered 200 is in the index afterwards (0 lost);
    writes cut off may or may not have committed."""
    from siamsearch.cluster import undeploy

    build_sharded(SAMPLE_FAQ, tmp_path / "sharded", encoder, 2, kind="flat", text_column="question")
    url = serving(cluster, tmp_path / "sharded", token_file, coordinators=2).url
    trials = []
    try:
        for trial in range(5):
            writing = Writing(url, f"w{trial}")
            time.sleep(0.5)
            before = replica_pids("coordinator")
            killed = before if trial % 2 else before[:1]
            for pid in killed:
                os.kill(pid, signal.SIGKILL)
            wait_running("coordinator", 2)
            assert not set(killed) & set(replica_pids("coordinator"))
            time.sleep(0.5)
            writing.stop()
            trials.append(writing)
        committed = SearchIndex.load(tmp_path / "sharded")
        acknowledged = {i: t for w in trials for i, t in w.acknowledged.items()}
        lost = [i for i, text in acknowledged.items() if committed.get(i) is None or committed.get(i).text != text]
        assert len(acknowledged) > 5 * 3 and lost == []
        assert sum(w.refused for w in trials) >= 1  # a kill did cut writes off
        new = {d.id for d in committed if not d.id.startswith("faq-")}
        assert set(acknowledged) <= new <= set().union(*(w.sent for w in trials))  # nothing else appears
    finally:
        undeploy()


# -- the command -------------------------------------------------------------------------------
def _ctrl_c_as_from_a_shell() -> None:
    """A child inherits its parent's ignored and blocked signals; in the full suite the command
    never ended on the SIGINT below (it did when run alone), so the child takes it as from a shell."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_serve_ray_command_serves_a_sharded_index_until_interrupted(cluster, encoder, token_file, tmp_path):
    from ray import serve

    serve.shutdown()  # the command starts Serve with its own address
    build_sharded(SAMPLE_FAQ, tmp_path / "sharded", encoder, 2, text_column="question")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "siamsearch", "serve", "--index", str(tmp_path / "sharded"),
                                "--ray", cluster.address, "--port", str(port), "--replica-cpus", "0.5",
                                "--token-file", str(token_file)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                               preexec_fn=_ctrl_c_as_from_a_shell,
                               env=os.environ | {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})  # its node on loopback
    try:
        deadline, banner = time.monotonic() + 180, b""
        while time.monotonic() < deadline and b"on Ray Serve" not in banner:
            assert process.poll() is None, process.stdout.read().decode()
            banner += process.stdout.readline()
        assert b"2 shards" in banner and f"http://127.0.0.1:{port}/".encode() in banner, banner
        hits = httpx.post(f"http://127.0.0.1:{port}/v1/search", json={"query": "退款多久到账", "k": 3}).json()["hits"]
        assert len(hits) == 3 and hits[0]["score"] >= hits[1]["score"]
        put = httpx.put(f"http://127.0.0.1:{port}/v1/documents", headers=AUTH, timeout=60,
                        json={"documents": [{"id": "cli-1", "text": "命令行加的问题"}]})
        assert put.status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)
    assert process.returncode == 0
    assert SearchIndex.load(tmp_path / "sharded").get("cli-1").text == "命令行加的问题"
