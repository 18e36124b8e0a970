"""A sharded index served on Ray Serve: one deployment per shard, a coordinator in front.

    HTTP ──▶ coordinator (``service.create_app`` over a ``ClusterIndex``; ``coordinators`` replicas)
               │ encodes each query once, asks every shard at once, merges by exact score, ties by id
               ├──▶ shard-000 deployment (``replicas`` replicas, each a ``ShardServer``)
               ├──▶ shard-001 …

Each shard replica is a ``ShardServer``: a ``LiveIndex`` of its shard folder, so it answers
from the latest committed generation, and a write it takes is committed durably (fsync'd,
renamed into place) before the call returns; replicas of one shard share its folder and
queue their writes on its lock (``live.py``). The coordinator is the same FastAPI app as
``siamsearch serve`` (API, page, tokens, metrics, filters) over a ``ClusterIndex``, which has
``LiveIndex``'s interface and a ``ShardedIndex`` of ``RemoteShard`` s inside: the merge, the
routing of writes by ``shard_of`` and their checks are the one-process index's own code.

Faults (the documented choice): a shard call that meets a dead replica is sent once more
(Ray Serve routes it to a live one); a shard with no replica answering within
``SHARD_TIMEOUT_S`` makes the request fail with a ``ShardUnavailableError`` naming the shard
(HTTP 503), never a silently partial answer. A write is acknowledged only after every shard
it touches has committed, one shard after another; a shard that dies during a write gets a
503 saying the write may or may not have committed there (the shards before it keep their
part: a write across shards is not one transaction), and it is not retried (PUT replaces,
so sending it again is safe). A killed coordinator loses nothing: it holds no state; Serve starts another.

Every node must see the index folder at the same path (one machine, or a shared file
system) and have siamsearch installed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.request import urlopen

import numpy as np

from .documents import Document
from .errors import IndexDirectoryError, InputError, SiamsearchError
from .filters import Where
from .lexical import Statistics
from .live import Coalescer, Commit, LiveIndex
from .query import Hit, Observe, Request
from .ray_engine import connect
from .shard_map import SHARD_MAP, folder_name, is_sharded, read_map
from .shards import ShardedIndex

if TYPE_CHECKING:
    from .encoder import Encoder
    from .kinds import IndexKind
    from .search import SearchIndex
    from .service import Settings

APP_NAME = "siamsearch"
SHARD_TIMEOUT_S = 10.0
"""How long the coordinator waits for a shard before answering 503 naming it."""
STATUS_MAX_AGE_S = 1.0
"""How old the coordinator's view of the shards' generations and counts may be (a search
or a write refreshes it; ``/readyz`` and ``/metrics`` read it)."""
MAX_ONGOING = 64
"""Requests a replica takes at once (Serve's default, 5, queued 32 clients' searches in the proxy)."""
READY_TIMEOUT_S = 30.0
"""How long ``deploy`` waits for the deployed service to answer over HTTP."""


class ShardUnavailableError(SiamsearchError):
    """A shard of a served sharded index did not answer: no replica of it is up (HTTP 503)."""


@dataclass(frozen=True)
class ShardStatus:
    """What the coordinator knows of a shard between calls."""

    generation: int
    documents: int
    rows: int
    tombstones: int


class ShardServer:
    """One shard folder served by a Ray Serve replica (see the module doc)."""

    def __init__(self, path: str, mmap: bool = True):
        self.live = LiveIndex(path, mmap=mmap)

    def encoder(self) -> Encoder:
        """The shard's encoder (it pickles as its ONNX graph and vocabulary), for the coordinator."""
        return self.live.index.encoder

    def describe(self) -> tuple[str, IndexKind, int, bool]:
        """The encoder's fingerprint, the kind, the rerank factor and whether it has a lexical part."""
        index = self.live.index
        return index.encoder.fingerprint, index.spec, index.rerank_factor, index.has_lexical

    def status(self) -> ShardStatus:
        return _status(self.live.index)

    def answer(self, request: Request, encoded: np.ndarray) -> tuple[ShardStatus, list[list[Hit]]]:
        index = self.live.index  # one generation for the status and the hits
        return _status(index), index.answer(request, None, encoded=encoded)

    def lexical_statistics(self, queries: list[str]) -> list[Statistics]:
        return self.live.index.lexical_statistics(queries)

    def candidate_hits(self, request: Request, encoded: np.ndarray,
                       statistics: list[Statistics]) -> tuple[ShardStatus, list[list[Hit]]]:
        index = self.live.index
        return _status(index), index.candidate_hits(request, None, encoded, statistics)

    def count(self, where: Where | None) -> int:
        return self.live.index.count(where)

    def get(self, doc_id: str) -> Document | None:
        return self.live.index.get(doc_id)

    def existing(self, ids: list[str]) -> set[str]:
        return self.live.index.existing(ids)

    def max_numeric_id(self) -> int:
        return self.live.index.max_numeric_id()

    def upsert(self, texts: list[str], ids: list[str], metadata: list[dict]) -> tuple[ShardStatus, int]:
        return self._status_after(self.live.upsert(texts, ids, metadata))

    def remove(self, ids: list[str]) -> tuple[ShardStatus, int]:
        return self._status_after(self.live.remove(ids))

    def compact(self) -> tuple[ShardStatus, int]:
        return self._status_after(self.live.compact())

    def _status_after(self, commit: Commit) -> tuple[ShardStatus, int]:
        return self.status(), commit.changed


def _status(index: SearchIndex) -> ShardStatus:
    return ShardStatus(index.generation, len(index), index.rows, index.tombstones)


class RemoteShard:
    """A shard served on Ray Serve, with what ``ShardedIndex`` asks of a shard: each call goes
    to one of the shard's replicas; a change is committed there before the call returns."""

    def __init__(self, number: int, handle: Any, encoder: Encoder | None = None,
                 timeout_s: float = SHARD_TIMEOUT_S):
        self.number, self.name, self._handle, self.timeout_s = number, folder_name(number), handle, timeout_s
        self.fingerprint, self.spec, self.rerank_factor, self.has_lexical = self._call("describe")
        self.encoder: Encoder = encoder or self._call("encoder")
        self.status: ShardStatus = self._call("status")

    def __len__(self) -> int:
        return self.status.documents

    @property
    def kind(self) -> str:
        return self.spec.name

    @property
    def rows(self) -> int:
        return self.status.rows

    @property
    def tombstones(self) -> int:
        return self.status.tombstones

    @property
    def generation(self) -> int:
        return self.status.generation

    def refresh(self) -> None:
        self.status = self._call("status")

    def answer(self, request: Request, observe: Observe | None, encoded: np.ndarray) -> list[list[Hit]]:
        """The shard's hits; ``observe`` sees the whole call as the stage "shard" (its own
        stages are timed where it runs)."""
        return self._timed(observe, "answer", request, encoded)

    def lexical_statistics(self, queries: list[str]) -> list[Statistics]:
        return self._call("lexical_statistics", queries)

    def candidate_hits(self, request: Request, observe: Observe | None, encoded: np.ndarray,
                       statistics: list[Statistics]) -> list[list[Hit]]:
        """As ``answer``, for a lexical or hybrid search's candidates (``shards.py``)."""
        return self._timed(observe, "candidate_hits", request, encoded, statistics)

    def _timed(self, observe: Observe | None, method: str, *args: Any) -> list[list[Hit]]:
        started = time.perf_counter()
        self.status, found = self._call(method, *args)
        if observe is not None:
            observe("shard", time.perf_counter() - started)
        return found

    def count(self, where: Where | None) -> int:
        return self._call("count", where)

    def get(self, doc_id: str) -> Document | None:
        return self._call("get", doc_id)

    def existing(self, ids: list[str]) -> set[str]:
        return self._call("existing", ids)

    def max_numeric_id(self) -> int:
        return self._call("max_numeric_id")

    def upsert(self, texts: list[str], ids: list[str], metadata: list[dict], progress: Any = None) -> int:
        return self._changed("upsert", texts, ids, metadata)

    def remove(self, ids: list[str]) -> int:
        return self._changed("remove", ids)

    def compact(self) -> int:
        return self._changed("compact")

    def _changed(self, method: str, *args: Any) -> int:
        self.status, changed = self._call(method, *args, write=True)
        return changed

    def _call(self, method: str, *args: Any, write: bool = False) -> Any:
        """The replica's answer; a read that met a dead replica is sent once more (to a live one)."""
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        for _ in range(1 if write else 2):
            try:
                return getattr(self._handle, method).remote(*args).result(timeout_s=self.timeout_s)
            except RayTaskError as e:  # raised by our code on the replica: a user's error, as it is
                raise (e.cause if isinstance(e.cause, SiamsearchError) else e) from None
            except (GetTimeoutError, TimeoutError):
                raise ShardUnavailableError(f"shard {self.number} ({self.name}) did not answer within "
                                            f"{self.timeout_s:g} s: none of its replicas is serving; retry once "
                                            "it is back", argument="shard") from None
            except RayActorError:
                if write:
                    raise ShardUnavailableError(
                        f"shard {self.number} ({self.name}) stopped during the write, which it may or may not "
                        "have committed; send it again (PUT replaces, so repeating it is safe)",
                        argument="shard") from None
        raise ShardUnavailableError(f"shard {self.number} ({self.name}) lost its replicas during the request; "
                                    "retry once they are back", argument="shard")


class ClusterIndex:
    """``LiveIndex``'s interface over the shards served on Ray Serve (what the coordinator's
    ``service.create_app`` serves): searches coalesced, fanned out and merged by the
    ``ShardedIndex`` inside; changes committed shard by shard before they return."""

    def __init__(self, path: str | Path, handles: Sequence[Any], shard_timeout_s: float = SHARD_TIMEOUT_S):
        self.path = Path(path).resolve()
        found = read_map(self.path)
        first = RemoteShard(0, handles[0], timeout_s=shard_timeout_s)
        shards = [first, *(RemoteShard(i, h, first.encoder, shard_timeout_s) for i, h in enumerate(handles[1:], 1))]
        for shard in shards:
            if shard.fingerprint != found["encoder_fingerprint"]:
                raise IndexDirectoryError.damaged(self.path, f"{shard.name} was built with another encoder than "
                                                             f"{SHARD_MAP} names")
        self._view = ShardedIndex(shards, found, self.path, parallel=True)  # type: ignore[arg-type]
        self._coalescer = Coalescer()
        self._seen = time.monotonic()
        self._refreshing = threading.Lock()

    @property
    def index(self) -> ShardedIndex:
        """The shards as one index; their generations and counts at most ``STATUS_MAX_AGE_S`` old
        (searches refresh them as they go, so an idle coordinator asks each shard, in turn)."""
        if time.monotonic() - self._seen > STATUS_MAX_AGE_S and self._refreshing.acquire(blocking=False):
            try:
                for shard in self._view.shards:
                    shard.refresh()
                self._seen = time.monotonic()
            finally:
                self._refreshing.release()
        return self._view

    def search_batch(self, queries: list[str], k: int = 10, where: Where | None = None,
                     observe: Observe | None = None, min_match: float | None = None,
                     mode: str = "dense") -> tuple[int, list[list[Hit]]]:
        """As ``LiveIndex.search_batch``; the generation is the sum of the answering shards'."""
        found = self._coalescer.search(self._view, queries, k, where, observe, min_match, mode)
        self._seen = time.monotonic()
        return self._view.generation, found

    def upsert(self, texts: Sequence[str], ids: Sequence[str], metadata: Sequence[dict] | None = None) -> Commit:
        return self._committed(lambda: self._view.upsert(texts, ids, metadata))

    def remove(self, ids: Sequence[str]) -> Commit:
        return self._committed(lambda: self._view.remove(ids))

    def compact(self) -> Commit:
        return self._committed(self._view.compact)

    def _committed(self, change: Callable[[], int]) -> Commit:
        changed = change()
        self._seen = 0.0  # the other shards' counts, afresh
        index = self.index
        return Commit(index.generation, len(index), changed)


class Coordinator:
    """The coordinator replica: ``service.create_app`` over a ``ClusterIndex``."""

    async def __init__(self, settings: dict, shard_timeout_s: float, *handles: Any):
        """Async, as Serve runs it on the replica's event loop, where the shards' answers must
        not be waited for: the ``ClusterIndex`` asks them from a thread."""
        from .service import Settings

        self.settings = Settings(**settings)
        self.cluster = await asyncio.to_thread(ClusterIndex, self.settings.index, handles, shard_timeout_s)

    def __serve_build_asgi_app__(self) -> Any:
        from .service import create_app

        return create_app(self.settings, self.cluster)


@dataclass(frozen=True)
class Served:
    """What ``deploy`` started."""

    url: str
    shards: int
    replicas: int
    coordinators: int


def deploy(settings: Settings, replicas: int = 1, coordinators: int = 1, host: str = "127.0.0.1",
           port: int = 8000, replica_cpus: float = 1.0, shard_timeout_s: float = SHARD_TIMEOUT_S) -> Served:
    """Start serving the sharded index ``settings.index`` on the connected Ray cluster: one
    deployment of ``replicas`` per shard, ``coordinators`` coordinator replicas, HTTP on
    ``host:port`` (Serve's proxy on the head node), each replica reserving ``replica_cpus``.
    Returns once it answers. Example: ``deploy(Settings("indexes/all"), replicas=2)``."""
    from ray import serve

    for name, value in (("replicas", replicas), ("coordinators", coordinators)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a whole number of at least 1, got {value!r}", argument=name)
    path = Path(settings.index).resolve()
    found = _sharded_map(path)
    _check_cpus(found["shards"] * replicas + coordinators, replica_cpus)
    serve.start(http_options={"host": host, "port": port}, proxy_location="HeadOnly")
    threads = {"OMP_NUM_THREADS": str(max(1, round(replica_cpus)))}  # FAISS's pool sized to the reservation
    options = {"ray_actor_options": {"num_cpus": replica_cpus, "runtime_env": {"env_vars": threads}},
               "health_check_period_s": 2, "health_check_timeout_s": 10, "max_ongoing_requests": MAX_ONGOING}
    shard = serve.deployment(ShardServer)
    shards = [shard.options(name=name, num_replicas=replicas, **options).bind(str(path / name), settings.mmap)
              for name in found["folders"]]
    coordinator = serve.deployment(serve.ingress()(Coordinator)).options(
        name="coordinator", num_replicas=coordinators, **options)
    app = coordinator.bind(asdict(settings) | {"index": str(path)}, shard_timeout_s, *shards)
    try:
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    except RuntimeError as e:  # Serve's word that a replica failed to start: its logs say why
        raise SiamsearchError(f"serving {path} on Ray failed ({str(e).splitlines()[0][:300]}); the replicas' "
                              "logs are under the Ray session's logs/serve folder") from None
    served = Served(f"http://{host}:{port}/", len(shards), replicas, coordinators)
    _check_answers(served.url)
    return served


def _check_answers(url: str) -> None:
    """Serve keeps the HTTP address it was first started with on a cluster: say so if that is not ours."""
    try:
        with urlopen(url + "readyz", timeout=READY_TIMEOUT_S) as response:
            if response.status == 200:
                return
    except OSError:
        pass
    raise SiamsearchError(f"the index is deployed, but nothing answers at {url}: Serve on this cluster was started "
                          "earlier with another address, which it keeps; stop it with 'serve shutdown' and "
                          "serve again, or use its address", argument="port")


def _sharded_map(path: Path) -> dict:
    """The shard map, checked before anything starts; a folder that is not a sharded index is one line."""
    if not is_sharded(path):
        raise InputError(f"{path}: not a sharded index (no {SHARD_MAP}); serving on Ray needs one built with "
                         "shards, or serve this folder in one process", path=path)
    return read_map(path)


def _check_cpus(replicas: int, each: float) -> None:
    """Refuse a deployment the cluster has too few CPUs for: Serve would wait for them forever."""
    import ray

    if isinstance(each, bool) or not isinstance(each, int | float) or not 0 <= each <= 64:
        raise InputError(f"replica_cpus must be a number from 0 to 64, got {each!r}", argument="replica_cpus")
    have = ray.cluster_resources().get("CPU", 0)
    if replicas * each > have:
        raise InputError(f"{replicas} replicas (shards × replicas + coordinators) at {each:g} CPU each need "
                         f"{replicas * each:g} CPUs, the cluster has {have:g}: give each less (replica_cpus) "
                         "or add nodes", argument="replica_cpus")


def undeploy() -> None:
    """Stop serving (the Ray cluster keeps running)."""
    from ray import serve

    serve.delete(APP_NAME)


def serve_on_ray(settings: Settings, address: str = "auto", replicas: int = 1, coordinators: int = 1,
                 host: str = "127.0.0.1", port: int = 8000, replica_cpus: float = 1.0,
                 on_ready: Callable[[Served], None] | None = None) -> None:
    """Join the cluster at ``address`` (``ray_engine.connect``), ``deploy``, and serve until
    interrupted; then stop serving: this application on a cluster it joined (whose Serve may
    run others), Serve and Ray too if this call started them."""
    import ray

    _sharded_map(Path(settings.index))
    started = connect(address)
    deployed = False
    try:
        served = deploy(settings, replicas, coordinators, host, port, replica_cpus)
        deployed = True
        if on_ready is not None:
            on_ready(served)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        if started:
            from ray import serve

            serve.shutdown()
            ray.shutdown()
        elif deployed and ray.is_initialized():
            undeploy()
