"""The two shapes of progress callback, named once: long work reports through them, and the
CLI draws them (its ``_StageBars``), so the library itself never prints.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, int, int], None]
"""Called with a stage ("encode", "index", "teacher", "epoch 3/6", …), the items it just
finished, and the stage's total (0: not known, e.g. a streamed corpus)."""

Advance = Callable[[int], None]
"""Called with the number of items just finished, within one stage (``Encoder.encode``)."""
