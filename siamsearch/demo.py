"""The demo: index the sample FAQ with the shipped model and answer sample queries.

It walks the path a user walks, on text written for the project (``sample/README.md``),
and leaves ``indexes/demo`` behind to explore with the other commands. With ``epochs``,
it first trains a model on the bundled sample pairs instead (``models/demo``), the way a
user would on their own pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .data import read_corpus, read_pairs
from .encoder import Encoder
from .progress import Progress
from .search import Hit, SearchIndex

if TYPE_CHECKING:  # training imports TensorFlow, which the demo needs only when it trains
    from .training import EpochCallback

SAMPLE_DIR = Path(__file__).parent / "sample"
SAMPLE_PAIRS = SAMPLE_DIR / "pairs.tsv"
SAMPLE_FAQ = SAMPLE_DIR / "faq.tsv"
SAMPLE_QUERIES = SAMPLE_DIR / "queries.txt"


@dataclass(frozen=True)
class DemoResult:
    encoder: Encoder
    index: SearchIndex
    model_dir: Path | None  # None: the shipped default model
    index_dir: Path
    results: list[tuple[str, list[Hit]]]


def run_demo(workdir: str | Path = ".", epochs: int | None = None, k: int = 3,
             on_epoch_end: EpochCallback | None = None, progress: Progress | None = None) -> DemoResult:
    """Index the sample FAQ and answer the sample queries; ``epochs``: train on the sample pairs first."""
    workdir = Path(workdir)
    index_dir, model_dir = workdir / "indexes" / "demo", None
    if epochs is None:
        encoder = Encoder.load()
    else:
        from .training import TrainConfig, train

        encoder = train(read_pairs(SAMPLE_PAIRS), config=TrainConfig(epochs=epochs), on_epoch_end=on_epoch_end,
                        progress=progress)
        model_dir = workdir / "models" / "demo"
        encoder.save(model_dir)
    faq = read_corpus(SAMPLE_FAQ, text_column="question")
    index = SearchIndex.build(faq.texts, encoder, ids=faq.ids, metadata=faq.metadata, progress=progress)
    index.save(index_dir)
    queries = [q for q in SAMPLE_QUERIES.read_text(encoding="utf-8").splitlines() if q.strip()]
    return DemoResult(encoder, index, model_dir, index_dir, list(zip(queries, index.search_batch(queries, k))))
