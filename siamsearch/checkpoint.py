"""Training that survives its process: a resumable state written at every epoch and on a stop.

``train(..., checkpoint_dir=DIR)`` writes ``DIR/checkpoint.npz`` when each epoch ends and,
when the process is asked to stop (SIGINT, i.e. Ctrl-C, or SIGTERM), after the batch in
progress; then it raises ``TrainingInterrupted``. ``train(..., checkpoint_dir=DIR,
resume=True)``, given the same inputs, continues from there to the result the run would
have reached without the stop: same seed, equal weights within float rounding
(tests/test_checkpoint.py).

What the state holds, and why each part is needed for an equal result:

* every variable of the trainer (the encoder's weights, the character vectors, learned
  margin and scales, and Keras's dropout seed states), of the optimiser (moments, step
  count, the weights' moving average) and of the running loss and accuracy;
* where training stands: epochs finished, batches of the next epoch done, and the NumPy
  generator's state at that epoch's start (the batches of an epoch are drawn from it, so
  they are drawn again and the done ones skipped, about 0.3 ms a batch);
* the callbacks' state (the averaged weights' stepped copy, early stopping's best epoch and
  weights, the epochs' history) and the vocabulary, network and starting record, so that
  resuming neither re-trains character vectors nor re-reads the init model;
* a digest of the inputs (pairs, validation pairs, unlabelled text, settings, vectors, init
  model, teacher): resuming with other inputs is refused rather than mixed;
* the sittings: when each process trained and from which epoch to which (the model's
  training record keeps them).

One file, written atomically (``storage.write_bytes_atomic``): a stop during the write
leaves the previous state. Nothing in it is executed when read (NumPy arrays and JSON,
``allow_pickle=False``).
"""

from __future__ import annotations

import hashlib
import io
import json
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .errors import InputError, SiamsearchError
from .storage import write_bytes_atomic

CHECKPOINT = "checkpoint.npz"
CHECKPOINT_FORMAT = "siamsearch-checkpoint"
CHECKPOINT_VERSION = 1
RESUME = "resume training from it with the same inputs"
"""The remedy an interruption names, in the API's words (a front end may name its command)."""


class TrainingInterrupted(SiamsearchError):
    """Training was asked to stop; its state is in ``path`` (``train(..., resume=True)``)."""

    def __init__(self, message: str, *, path: str | Path, epoch: int, batch: int):
        super().__init__(message, path=path)
        self.epoch, self.batch = epoch, batch


def inputs_digest(*parts: object) -> str:
    """SHA-256 of the training inputs: NumPy arrays by their bytes, everything else as JSON."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, ensure_ascii=False, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def _variables(trainer) -> list[tuple[str, list]]:
    """Every variable whose value training depends on, in an order fixed by how it was built."""
    return [("trainer", trainer.variables), ("optimizer", trainer.optimizer.variables),
            ("metrics", trainer.metrics_variables)]


@dataclass
class Resumed:
    """What a checkpoint says of the run it came from (``Checkpoints.read``)."""

    meta: dict
    arrays: dict[str, np.ndarray]

    @property
    def epoch(self) -> int:
        return self.meta["position"]["epoch"]

    @property
    def batch(self) -> int:
        return self.meta["position"]["batch"]


@dataclass
class Checkpoints:
    """The checkpoint folder of one run: reads, writes and tells ``fit`` when to stop.

    ``start`` is what to record of this run beside the training state (vocabulary, network,
    starting record), ``digest`` its inputs' ``inputs_digest``."""

    directory: Path
    digest: str
    start: dict = field(default_factory=dict)
    sittings: list[dict] = field(default_factory=list)
    stop_requested: threading.Event = field(default_factory=threading.Event)
    _sitting_started: float = field(default_factory=time.time)

    @property
    def path(self) -> Path:
        return self.directory / CHECKPOINT

    def check_new(self) -> None:
        """Refuse to start a run over another's checkpoint (it would be overwritten)."""
        if self.path.exists():
            raise InputError(f"{self.directory}: holds a checkpoint of an earlier run; resume it (resume=True) or "
                             "choose an empty checkpoint folder", path=self.directory, argument="checkpoint_dir")

    def read(self) -> Resumed:
        """The saved state, or an InputError: none there, damaged, or written for other inputs."""
        if not self.path.is_file():
            raise InputError(f"{self.directory}: no training checkpoint to resume ({CHECKPOINT} is missing)",
                             path=self.directory, argument="checkpoint_dir")
        try:
            with np.load(self.path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            meta = json.loads(bytes(arrays.pop("meta")).decode("utf-8"))
        except (OSError, ValueError, KeyError, UnicodeDecodeError) as e:
            raise InputError(f"{self.path}: damaged checkpoint ({e}); train again from the start",
                             path=self.path) from None
        if meta.get("format") != CHECKPOINT_FORMAT or meta.get("format_version") != CHECKPOINT_VERSION:
            raise InputError(f"{self.path}: not a siamsearch training checkpoint of version {CHECKPOINT_VERSION}",
                             path=self.path)
        if meta.get("digest") != self.digest:
            raise InputError(f"{self.directory}: the checkpoint was written for other training inputs (pairs, "
                             "settings, vectors, init model or teacher); resume with the inputs it was started with",
                             path=self.directory, argument="checkpoint_dir")
        self.start, self.sittings = meta["start"], meta["sittings"]
        return Resumed(meta, arrays)

    def save(self, trainer, callbacks: list, epoch: int, batch: int, rng_state: dict) -> None:
        """Write the whole state: ``epoch`` epochs finished and ``batch`` batches of the next."""
        arrays = {}
        for prefix, variables in _variables(trainer):
            arrays.update({f"{prefix}/{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)})
        states = {}
        for i, callback in enumerate(callbacks):
            if hasattr(callback, "checkpoint_state"):
                small, big = callback.checkpoint_state()
                states[str(i)] = small
                arrays.update({f"callback/{i}/{j}": a for j, a in enumerate(big)})
        meta = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "digest": self.digest,
                "start": self.start, "callbacks": states, "sittings": self.sittings_now(epoch),
                "position": {"epoch": epoch, "batch": batch, "rng": rng_state}}
        arrays["meta"] = np.frombuffer(json.dumps(meta, ensure_ascii=False).encode("utf-8"), np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        self.directory.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self.path, buffer.getvalue())

    def restore(self, trainer, callbacks: list, resumed: Resumed) -> None:
        """Put a saved state back into a trainer built as the saved one was."""
        for prefix, variables in _variables(trainer):
            for i, variable in enumerate(variables):
                variable.assign(resumed.arrays[f"{prefix}/{i}"])
        for i, callback in enumerate(callbacks):
            if hasattr(callback, "checkpoint_state"):
                n = sum(1 for k in resumed.arrays if k.startswith(f"callback/{i}/"))
                callback.restore_checkpoint_state(resumed.meta["callbacks"][str(i)],
                                                  [resumed.arrays[f"callback/{i}/{j}"] for j in range(n)])

    def sittings_now(self, epoch: int) -> list[dict]:
        """The sittings so far, this process's included (from the epoch it started at to ``epoch``)."""
        first = self.sittings[-1]["to_epoch"] if self.sittings else 0
        now = {"started": datetime.fromtimestamp(self._sitting_started, timezone.utc).isoformat(timespec="seconds"),
               "from_epoch": first, "to_epoch": epoch, "seconds": round(time.time() - self._sitting_started, 1)}
        return [*self.sittings, now]

    @contextmanager
    def stop_on_signals(self) -> Iterator[None]:
        """While training: SIGINT and SIGTERM set ``stop_requested`` (``fit`` then saves after the
        batch in progress and raises) instead of ending the process mid-step. Only the main
        thread can take signals; elsewhere nothing is installed."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, lambda *_: self.stop_requested.set())
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def interrupted(self, epoch: int, epochs: int, batch: int) -> TrainingInterrupted:
        return TrainingInterrupted(f"training stopped at epoch {epoch + 1}/{epochs}, after batch {batch}; its state "
                                   f"is saved in {self.directory}: {RESUME}", path=self.directory,
                                   epoch=epoch, batch=batch)
