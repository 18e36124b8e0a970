"""No acknowledged write is ever lost: the server is killed (SIGKILL) at random moments while
clients upsert and delete, then restarted; every acknowledged change must be there, and the
one change each client had in flight must be wholly applied or not at all."""

from __future__ import annotations

import random
import shutil
import signal
import threading
import time

import httpx
import pytest

from siamsearch import Encoder, SearchIndex

from .serving import TOKEN, start, stop

TRIALS = 20
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHARS = "退款运费发票会员积分快递订单密码账号客服优惠券取消修改地址支付失败怎么多久能吗"


class Client(threading.Thread):
    """Changes its own documents one request at a time, keeping what the server acknowledged
    (``acked``) apart from the one request in flight when the server died (``pending``)."""

    def __init__(self, url: str, name: str, seed: int, stop_event: threading.Event):
        super().__init__(daemon=True)
        self.url, self.name, self.rng, self.stop_event = url, name, random.Random(seed), stop_event
        self.acked: dict[str, str] = {}
        self.pending: dict[str, str | None] | None = None  # id → new text, or None for a removal
        self.count = 0

    def text(self) -> str:
        return "".join(self.rng.choice(CHARS) for _ in range(self.rng.randint(2, 10)))

    def run(self) -> None:
        with httpx.Client(timeout=30) as http:
            while not self.stop_event.is_set():
                if self.acked and self.rng.random() < 0.3:
                    ids = self.rng.sample(sorted(self.acked), min(len(self.acked), self.rng.randint(1, 3)))
                    self.pending = dict.fromkeys(ids)
                    request = {"method": "DELETE", "json": {"ids": ids}}
                else:
                    ids = [f"{self.name}-{self.count}-{i}" for i in range(self.rng.randint(1, 4))]
                    ids += self.rng.sample(sorted(self.acked), min(len(self.acked), 1))  # a replacement too
                    self.pending = {i: self.text() for i in ids}
                    request = {"method": "PUT", "json": {"documents": [{"id": i, "text": t}
                                                                       for i, t in self.pending.items()]}}
                self.count += 1
                try:
                    response = http.request(url=f"{self.url}/v1/documents", headers=AUTH, **request)
                except httpx.HTTPError:
                    return  # the server died with this request in flight: it stays pending
                assert response.status_code == 200, response.text
                for i, t in self.pending.items():
                    if t is None:
                        del self.acked[i]
                    else:
                        self.acked[i] = t
                self.pending = None


@pytest.fixture
def index_dir(tmp_path):
    path = tmp_path / "index"
    SearchIndex.build(["怎么退款", "运费谁出", "发票怎么开"], Encoder.load(), ids=["a", "b", "c"]).save(path)
    return path


def test_sigkill_never_loses_an_acknowledged_write(index_dir, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    rng = random.Random(2026)
    clients: list[Client] = []
    commits = in_flight = 0
    for trial in range(TRIALS):
        process, url = start(index_dir, token)  # also proves the killed server's folder opens again
        if trial:
            check(index_dir, clients)
        stop_event = threading.Event()
        clients = [Client(url, f"t{trial}c{n}", rng.randrange(1 << 30), stop_event) for n in range(3)]
        for client in clients:
            client.start()
        time.sleep(rng.uniform(0.2, 2.0))
        stop(process, signal.SIGKILL)
        stop_event.set()
        for client in clients:
            client.join(timeout=30)
        commits += sum(client.count for client in clients)
        in_flight += any(client.pending is not None for client in clients)
    check(index_dir, clients)
    assert commits >= 3 * TRIALS and in_flight >= TRIALS // 2  # the kills fell among real writes
    shutil.rmtree(index_dir)


def check(index_dir, clients: list[Client]) -> None:
    index = SearchIndex.load(index_dir)
    for client in clients:
        found = {d.id: d.text for d in index if d.id.startswith(f"{client.name}-")}
        before = dict(client.acked)
        after = dict(client.acked)
        for i, t in (client.pending or {}).items():
            if t is None:
                after.pop(i, None)
            else:
                after[i] = t
        assert found in (before, after), f"{client.name}: a write was lost or half-applied"
    documents = {d.id: d.text for d in index}  # the lexical side holds the same documents as the FAISS side
    ids = sorted(documents)
    fresh = SearchIndex.build([documents[i] for i in ids], index.encoder, ids=ids, kind="flat")
    queries = [documents[i] for i in ids[:: max(1, len(ids) // 8)]]
    for mode in ("lexical", "hybrid"):
        assert index.search_batch(queries, 5, mode=mode) == fresh.search_batch(queries, 5, mode=mode), mode
