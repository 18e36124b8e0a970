"""Changes an index in a loop, logging each state before and after its commit.

Run by test_durability.py as a separate process, which it kills (-9) at random moments or
reads from concurrently. Usage: index_writer.py INDEX LOG SEED COMMITS
"""

import json
import os
import random
import sys

from siamsearch import SearchIndex

path, log_path, seed, commits = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
CHARS = "退款运费发票会员积分快递订单密码账号客服优惠券取消修改地址支付失败怎么多久能吗"


def text() -> str:
    return "".join(rng.choice(CHARS) for _ in range(rng.randint(2, 12)))


def log(record: dict) -> None:
    with open(log_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


index = SearchIndex.load(path)
state = {d.id: d.text for d in index}
log({"committed": state, "generation": index.generation, "ready": True})
for _ in range(commits):
    op = rng.choice(["add", "upsert", "remove", "compact", "rebuild"])
    if op == "add":
        texts = [text() for _ in range(rng.randint(1, 5))]
        state.update(zip(index.add(texts), texts))
    elif op == "upsert":
        ids = rng.sample(sorted(state), min(2, len(state))) + [f"u{rng.randint(0, 99)}"]
        ids = list(dict.fromkeys(ids))
        texts = [text() for _ in ids]
        index.upsert(texts, ids)
        state.update(zip(ids, texts))
    elif op == "remove" and len(state) > 1:
        victims = rng.sample(sorted(state), rng.randint(1, min(3, len(state) - 1)))
        index.remove(victims)
        for v in victims:
            del state[v]
    elif op == "compact":
        index.compact()
    elif op == "rebuild":  # a whole new build over the same folder, as build-index does
        ids = sorted(state)
        index = SearchIndex.build([state[i] for i in ids], index.encoder, ids=ids, kind=rng.choice(["flat", "hnsw"]))
    log({"pending": state})
    index.save(path)
    log({"committed": state, "generation": index.generation})
