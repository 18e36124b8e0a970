"""The Ray engine of a streamed build (``build.py``): reading and encoding on a Ray cluster.

* **read**: Ray Data runs ``data.stream_corpus`` on each corpus file in its own task (files in
  parallel), yielding blocks of documents as they are read: the same parser, ids, line
  numbers and errors as a one-process build, so that both build the same index.
* **encode**: an actor pool, one ``Encoder`` per actor (it pickles as its ONNX graph and
  vocabulary), one CPU each; the blocks come back to the driver in corpus order, where
  ``build.py`` appends them to the index files: a stream, never the whole corpus.
* **assign**: each block of vectors goes to a Ray task that finds its IVF lists against the
  one trained quantiser (FAISS's own assignment); the driver writes the lists.

Faults: a worker that dies is replaced and its block run again (Ray retries actor and task
calls after a worker's death); a failure that persists ends the build with one line, and
the index folder keeps its committed generation (``index_folder.commit``).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np

from .build import ASSIGN_ROWS, Source, VectorFile, nearest_centroids
from .data import Corpus
from .encoder import Encoder
from .errors import InputError, SiamsearchError

READ_CPUS = 0  # reading is light, and the encoders hold every CPU: a reading task that needed one would never run
TASK_RETRIES = 3
BLOCK_BYTES = 1 << 20  # Ray Data joins a reader's chunks into blocks up to this size: small, so that every
# encoding actor gets work from one large file (at Ray's default, 128 MiB, one actor took a whole 60k corpus)
log = logging.getLogger(__name__)


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InputError("building on Ray needs the ray package; install it with pip install 'siamsearch[ray]'",
                         argument="engine") from None
    return ray


def _read(batch: dict, sources: Sequence[Source]) -> Iterator[dict]:
    """Ray Data: the documents of the files named in ``batch``, a chunk at a time, as columns."""
    for number in batch["source"]:
        source = sources[int(number)]
        for chunk in source.read():
            if not len(chunk):  # only blank lines after the last full chunk: count them on the next block
                continue
            yield {"id": np.array(chunk.ids, dtype=object), "text": np.array(chunk.texts, dtype=object),
                   "metadata": np.array([json.dumps(m, ensure_ascii=False) for m in chunk.metadata], dtype=object),
                   "line": np.array(chunk.lines, dtype=np.int64),
                   "skipped": np.array([chunk.skipped] + [0] * (len(chunk) - 1), dtype=np.int64),
                   "source": np.array([chunk.source] * len(chunk), dtype=object)}


class _Encode:
    """Ray Data actor: one encoder, one thread (the actor holds one CPU)."""

    def __init__(self, encoder: Encoder):
        self.encoder = encoder

    def __call__(self, batch: dict) -> dict:
        batch["vector"] = self.encoder.encode(list(batch["text"]), threads=1)
        return batch


def _assign(centroids: np.ndarray, block: np.ndarray) -> np.ndarray:
    import faiss

    faiss.omp_set_num_threads(1)  # the task holds one CPU
    return nearest_centroids(centroids, block)


def _reraise(e: Exception) -> None:
    """A user's error (a bad line in a file) raised in a worker comes back as the one line it
    was; anything else as one line saying the build failed."""
    seen: BaseException | None = e
    while seen is not None:
        cause = getattr(seen, "cause", None)  # Ray's wrapper of a worker's exception (itself a subclass of it)
        if cause is None and isinstance(seen, SiamsearchError):  # Ray Data appends advice to its message
            raise type(seen)(seen.message, path=seen.path, line=seen.line, argument=seen.argument) from None
        seen = cause or seen.__cause__
    lines = [line for line in str(e).splitlines() if line.strip()]
    raise SiamsearchError(f"the Ray build failed ({(lines[-1] if lines else type(e).__name__)[:300]}); "
                          "the index was not changed") from None


def connect(address: str = "auto") -> bool:
    """Join the Ray cluster at ``address`` (``"auto"``: ``RAY_ADDRESS`` or a running local
    cluster, else a new one on this machine) unless Ray is initialised already; whether this
    call started Ray (and so should shut it down)."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    try:
        ray.init(address=None if address == "auto" else address, log_to_driver=False,
                 logging_level=logging.WARNING, include_dashboard=False)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise SiamsearchError(f"cannot reach the Ray cluster at {address!r} ({str(e).splitlines()[0]}); "
                              "start one with 'ray start --head', or give address auto to start one "
                              "here", argument="address") from None
    return True


class RayEngine:
    """Connects to the cluster at ``address`` (``connect``); ``workers`` encoding actors
    (default: one per CPU of the cluster)."""

    def __init__(self, address: str = "auto", workers: int | None = None):
        ray = _import_ray()
        self._started = connect(address)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise InputError(f"workers must be a whole number of at least 1, got {workers!r}", argument="workers")
        self.workers = workers or max(1, cpus)
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # positions are corpus order
        context.target_max_block_size = BLOCK_BYTES
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # a line per dataset run otherwise
        self._ray = ray

    def encode(self, sources: Sequence[Source], encoder: Encoder) -> Iterator[tuple[Corpus, np.ndarray]]:
        ray = self._ray
        data = ray.data.from_items([{"source": n} for n in range(len(sources))], override_num_blocks=len(sources))
        data = data.map_batches(_read, fn_kwargs={"sources": list(sources)}, batch_size=1, num_cpus=READ_CPUS)
        data = data.map_batches(_Encode, fn_constructor_args=(encoder,), num_cpus=1, batch_size=None,
                                compute=ray.data.ActorPoolStrategy(size=self.workers))
        try:
            with warnings.catch_warnings():  # Ray warns that one file (one input) cannot keep every actor busy:
                warnings.simplefilter("ignore", UserWarning)  # it can, as a file's reader yields many blocks
                for batch in data.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
                    yield from _by_file(batch)
        except Exception as e:  # Ray wraps a worker's exception in its own types
            _reraise(e)

    def assign(self, centroids: np.ndarray, vectors: VectorFile) -> np.ndarray:
        ray = self._ray
        task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_assign)
        shared = ray.put(np.ascontiguousarray(centroids, dtype=np.float32))
        # A finished task's reference is dropped at once: while it lives, Ray keeps the task's block
        # in the object store to rerun it (lineage), so keeping them all would hold every vector.
        pending, parts = deque(), []
        try:
            for _, block in vectors.blocks(ASSIGN_ROWS):
                pending.append(task.remote(shared, block))
                if len(pending) > 2 * self.workers:  # bounded: blocks in flight, not the corpus
                    parts.append(ray.get(pending.popleft()))
            while pending:
                parts.append(ray.get(pending.popleft()))
        except Exception as e:
            _reraise(e)
        return np.concatenate(parts) if parts else np.empty(0, np.int64)

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()


def _by_file(batch: dict) -> Iterator[tuple[Corpus, np.ndarray]]:
    """A block's documents with their vectors, one piece per file (Ray may join the end of
    one file's rows to the start of the next's), so that an error names the right file."""
    sources = batch["source"]
    edges = [0, *(np.flatnonzero(sources[1:] != sources[:-1]) + 1).tolist(), len(sources)]
    for a, b in zip(edges, edges[1:]):
        if a == b:
            continue
        corpus = Corpus(list(batch["id"][a:b]), list(batch["text"][a:b]),
                        [json.loads(m) for m in batch["metadata"][a:b]], int(batch["skipped"][a:b].sum()), False,
                        [int(n) for n in batch["line"][a:b]], str(sources[a]))
        yield corpus, np.asarray(batch["vector"][a:b], dtype=np.float32)
