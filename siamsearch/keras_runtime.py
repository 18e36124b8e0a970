"""Loading Keras and TensorFlow, once, when training (or a Keras model) is first wanted.

Nothing here runs at import: importing any siamsearch module leaves the environment, file
descriptor 2 and TensorFlow's thread pools as they were. ``load()`` is what changes them,
and only the code that needs Keras calls it (``training.train``, ``Encoder.keras_model``),
before it imports ``model.py`` or ``trainer.py``:

* ``KERAS_BACKEND`` defaults to ``tensorflow`` (the only backend siamsearch trains with) and
  ``TF_CPP_MIN_LOG_LEVEL`` to 3 (no C++ log lines; real failures still raise), unless set;
* TensorFlow 2.21's C++ runtime writes start-up notices (the oneDNN line, the absl preamble)
  straight to file descriptor 2, whatever TF_CPP_MIN_LOG_LEVEL says; a CLI whose errors are
  one line cannot print four lines of noise first, so fd 2 goes to /dev/null during the
  import alone (a failing import still raises its Python exception after it is restored);
* TensorFlow's thread pools are set to many ops side by side, one thread each: measured
  fastest for these small LSTM matmuls. This applies only if the caller has not configured
  them already; TF_NUM_INTEROP_THREADS / TF_NUM_INTRAOP_THREADS override the defaults.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from .errors import InputError, SiamsearchError
from .system import available_cpus

TRAINING_PACKAGES = {"tensorflow": "TensorFlow", "keras": "Keras", "gensim": "gensim", "onnx": "onnx"}
"""What training needs beyond searching (the ``train`` extra): import name → what to call it."""
TRAIN_EXTRA = "pip install 'siamsearch[train]'"


def require_training() -> None:
    """An InputError naming the extra unless every training package is installed: searching,
    building and serving need none of them, so a default install leaves them out."""
    from importlib.util import find_spec

    missing = [label for name, label in TRAINING_PACKAGES.items() if find_spec(name) is None]
    if missing:
        raise InputError(f"training needs {', '.join(missing)}, which are not installed; install them with "
                         f"{TRAIN_EXTRA}")

_loaded: ModuleType | None = None


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _configure_threads(tf: ModuleType) -> None:
    threading = tf.config.threading
    try:
        if threading.get_inter_op_parallelism_threads() == 0:
            threading.set_inter_op_parallelism_threads(int(os.environ.get("TF_NUM_INTEROP_THREADS",
                                                                          available_cpus())))
        if threading.get_intra_op_parallelism_threads() == 0:
            threading.set_intra_op_parallelism_threads(int(os.environ.get("TF_NUM_INTRAOP_THREADS", 1)))
    except RuntimeError:  # TensorFlow is already running: keep its settings
        pass


def load() -> ModuleType:
    """Import and configure Keras on TensorFlow (see the module docstring); returns ``keras``."""
    global _loaded
    if _loaded is None:
        require_training()
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with _native_stderr_silenced():
            import keras
            import tensorflow as tf
        if keras.backend.backend() != "tensorflow":
            raise SiamsearchError(f"siamsearch trains with Keras's TensorFlow backend, not {keras.backend.backend()}; "
                                  "set KERAS_BACKEND=tensorflow")
        _configure_threads(tf)
        _loaded = keras
    return _loaded
