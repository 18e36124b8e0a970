"""Fitting a model's hybrid fusion on labelled pairs, as its threshold and match are fitted.

The pairs become the retrieval task of ``evaluation.py`` (the distinct sentences as the
corpus, each positive pair's first sentence a query, the query itself left out of its
results), one ``SearchIndex`` is built over them, each query's hybrid candidates are
scored once (``SearchIndex.hybrid_pools``), and every fusion of ``CANDIDATES`` orders the
same candidates; the one with the best MRR@10 is kept (the first of equals: reciprocal rank
fusion, then the weighted fusion from weight 1, the model's order, to weight 0, BM25's).
Why by retrieval and not by pair scores: a fusion only orders hits, so what it should be
good at is ranking; a weight fitted to separate pairs would ignore how the two scores'
ranges differ across a query's candidates.

``fit_fusion`` is what ``train`` (on ``--valid``) and ``calibrate`` call; its report goes in
the model's metrics.
"""

from __future__ import annotations

import numpy as np

from .data import Pairs
from .encoder import Encoder
from .fusion import Fusion, Reciprocal, Weighted
from .metrics import MRR_AT, RetrievalTask, retrieval_metrics

CANDIDATES: tuple[Fusion, ...] = (Reciprocal(), *(Weighted(round(1 - w / 10, 1)) for w in range(11)))
"""What fitting chooses among: reciprocal rank fusion, and weights 1.0 (the model's order) to 0.0 (BM25's)."""
MIN_QUERIES = 20
"""Fewer queries than this leave the fusion as it was: a choice on a handful of queries is noise."""
FIT_QUERIES = 2000
"""At most this many queries (a seeded sample) are ranked, to bound the time."""


def fit_fusion(encoder: Encoder, pairs: Pairs, seed: int = 0) -> tuple[Fusion | None, dict]:
    """The fusion of ``CANDIDATES`` with the best MRR@10 on ``pairs``' retrieval task, and a
    report (queries, corpus, each candidate's MRR@10); None (and the reason in the report)
    when the pairs give fewer than ``MIN_QUERIES`` queries."""
    from .search import SearchIndex

    if pairs.graded or not pairs.positive.any():
        return None, {"skipped": "no 0/1 positive pairs to make queries of"}
    task = RetrievalTask.from_pairs(pairs)
    if len(task.queries) < MIN_QUERIES:
        return None, {"skipped": f"{len(task.queries)} queries, fewer than {MIN_QUERIES}", "queries": len(task.queries)}
    if len(task.queries) > FIT_QUERIES:
        keep = np.sort(np.random.default_rng(seed).choice(len(task.queries), FIT_QUERIES, replace=False))
        task = RetrievalTask(task.corpus, [task.queries[i] for i in keep], [task.relevant[i] for i in keep])
    index = SearchIndex.build(task.corpus, encoder, ids=[str(i) for i in range(len(task.corpus))])
    pools = index.hybrid_pools([task.corpus[q] for q in task.queries], MRR_AT + 1)
    mrr = f"mrr@{MRR_AT}"
    fitted = {}
    for fusion in CANDIDATES:
        ranked = [[int(pool.ids[i]) for i in pool.order(fusion)[0][: MRR_AT + 1] if int(pool.ids[i]) != q][:MRR_AT]
                  for q, pool in zip(task.queries, pools)]
        fitted[fusion.label] = retrieval_metrics(ranked, task.relevant)[mrr]
    best = max(CANDIDATES, key=lambda f: fitted[f.label])  # max keeps the first of equals
    return best, {"fusion": best.to_dict(), "queries": len(task.queries), "corpus": len(task.corpus), mrr: fitted}
