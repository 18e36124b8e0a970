"""How far can BQ retrieval go inside the product's contract with more capacity than a CPU trains?

Issue 5 asks for MRR@10 at 2× character BM25's on bq/test (0.594). The shipped encoder (a
BiLSTM 128/32, 64-d, trained on a 2-core CPU) reaches 0.353. This probe asks whether that gap
is the encoder's size and training budget or the task's labels (see the relevance audit in
docs/benchmarks.md): it trains the same kind of model, and larger ones, on a GPU, with the
shipped model's objective, and reports labelled retrieval on bq/dev and bq/test.

    python bench/capacity_probe.py prepare bench/.work/probe.npz   # here: siamsearch, ../shared
    python bench/capacity_probe.py run bench/.work/probe.npz --out results.json   # PyTorch, a GPU
    python bench/capacity_probe.py report results.json [more.json]  # here: writes docs/

It is a probe, not the product: PyTorch is no dependency of siamsearch and nothing trained here
ships. What it keeps of the product: one shared encoder → vector, the score exp(-L1); the
shipped model's character vocabulary and 300-d vectors; its objective (``margin``: the in-batch
loss over positive pairs at temperature 0.5 with paraphrases not counted as negatives, plus the
logistic loss of (margin - L1) / scale on every pair), masked characters (0.3), dropout 0.2
(the transformer's own layers: 0.1), Nadam at 0.002 (unless a configuration says otherwise),
batches of 512 pairs bucketed by length, and a moving average of the weights (0.998). The loss
and the batching are written again here in PyTorch (``in_batch_loss``, ``_batches``):
siamsearch's own (trainer.py) import TensorFlow, which the GPU machine does not have. What it changes per
configuration: the encoder's size and kind, whether the vectors are tuned, the batch size, the
learning rate and its warm-up. Each epoch is scored on bq/dev; the epoch with the best dev
MRR@10 is kept (more generous to the probe than the shipped model's early stopping on dev
ROC-AUC), and its bq/test figures are reported beside, never chosen on.

The task is ``siamsearch.metrics.RetrievalTask`` (each file alone), ranked exactly (all
L1 distances, the query removed). ``prepare`` stores the shipped model's vectors of both
corpora and its metrics from siamsearch's own ``RetrievalEvaluator`` (the product's search
path); ``run`` first scores those vectors with its own code and stops unless the two agree, so
its metric code is checked where it runs. ``prepare``'s file holds character ids derived from BQ
(research-only licence): keep it in ignored bench/.work/ and never commit it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SPLITS = ("dev", "test")
TOP = 10
MASK_PROBABILITY, OOV = 0.3, 1

_WIDE = {"kind": "bilstm", "units": (512, 256), "tune_vectors": True, "batch": 512}
_TRANSFORMER = {"kind": "transformer", "layers": 4, "width": 384, "out": 256, "tune_vectors": True, "batch": 512}
CONFIGS: dict[str, dict] = {
    "shipped-size": {"kind": "bilstm", "units": (128, 32), "tune_vectors": False, "batch": 512},
    "wide-tuned": _WIDE,
    "transformer": _TRANSFORMER,
    "wide": {**_WIDE, "tune_vectors": False},
    "wide-tuned-b2048": {**_WIDE, "batch": 2048},
    "transformer-lr3e-4": {**_TRANSFORMER, "lr": 3e-4, "warmup_steps": 400},
    "transformer-lr1e-4": {**_TRANSFORMER, "lr": 1e-4, "warmup_steps": 400},
    "transformer-lr3e-4-50": {**_TRANSFORMER, "lr": 3e-4, "warmup_steps": 400, "epochs": 50},
}
EPOCHS = 20
"""What ``run`` trains, in this order (most telling first: a run cut short keeps what finished),
each for ``epochs`` (default ``EPOCHS``) at learning rate ``lr`` (default ``LEARNING_RATE``),
reached linearly over ``warmup_steps`` (default none). BiLSTM outputs are 2 × the second
layer's units. The transformer at 0.002 without warm-up collapsed within three epochs (every
sentence to one vector), hence the ones at lower rates with about two epochs of warm-up (BQ
train: 100,000 pairs, 196 batches an epoch); at 0.0003 it was still rising at epoch 20,
hence the 50-epoch run."""
LEARNING_RATE = 0.002


def _padded(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    from siamsearch.text import pad

    return pad(rows).astype(np.int16), np.array([len(r) for r in rows], np.int16)


def prepare(out: Path, data: Path, model: str | None) -> None:
    """Write ``out`` (npz): the shipped model's vocabulary vectors, BQ train's pairs as ids with
    their paraphrase groups, and for bq/dev and bq/test the retrieval task as ids plus the
    shipped model's corpus vectors and metrics."""
    from siamsearch import Encoder, read_pairs
    from siamsearch.architectures import EMBEDDING_LAYER
    from siamsearch.data import paraphrase_groups
    from siamsearch.evaluation import EncoderRetriever, RetrievalEvaluator
    from siamsearch.metrics import RetrievalTask

    encoder = Encoder.load(model)
    vocab, max_length = encoder.vocab, encoder.config.max_length
    arrays: dict[str, np.ndarray] = {
        "vectors": encoder.keras_model().get_layer(EMBEDDING_LAYER).get_weights()[0].astype(np.float32)}
    train = read_pairs(data / "train.tsv")
    texts, left, right = train.distinct()
    arrays["train_ids"], arrays["train_lengths"] = _padded([vocab.ids(t, max_length) for t in texts])
    arrays.update(train_left=left, train_right=right, train_labels=train.labels.astype(np.float32),
                  train_groups=paraphrase_groups(texts, train).astype(np.int64))
    shipped = {}
    for split in SPLITS:
        task = RetrievalTask.from_pairs(read_pairs(data / f"{split}.tsv"))
        arrays[f"{split}_ids"], arrays[f"{split}_lengths"] = _padded([vocab.ids(t, max_length) for t in task.corpus])
        arrays[f"{split}_queries"] = np.array(task.queries, np.int64)
        arrays[f"{split}_relevant_offsets"] = np.cumsum([0] + [len(r) for r in task.relevant])
        arrays[f"{split}_relevant"] = np.array([d for r in task.relevant for d in sorted(r)], np.int64)
        arrays[f"{split}_shipped"] = encoder.encode(task.corpus)
        measured = RetrievalEvaluator(task)(EncoderRetriever(encoder))
        shipped[split] = {k: measured[k] for k in ("recall@1", "recall@10", "mrr@10")}
    training = {"epochs_run": len(encoder.history), "epoch_kept": encoder.training.get("epoch_kept"),
                "seconds": encoder.training.get("seconds")}
    arrays["shipped_metrics"] = np.array(json.dumps({"fingerprint": encoder.fingerprint, "training": training,
                                                     **shipped}))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    print(json.dumps(shipped, indent=1))


# ---- everything below runs with PyTorch and NumPy alone (the GPU machine has no TensorFlow) ----

def metrics_of(vectors, queries, relevant_offsets, relevant) -> dict:
    """recall@1, recall@10 and MRR@10 of exact L1 ranking of ``vectors`` (a torch tensor),
    each query removed from its own results: the task's metrics, as ``retrieval_metrics``."""
    import torch

    device = vectors.device
    q = torch.as_tensor(queries, device=device)
    n = len(vectors)
    is_relevant = torch.zeros(len(q), n, dtype=torch.bool, device=device)
    rows = torch.repeat_interleave(torch.arange(len(q), device=device),
                                   torch.as_tensor(np.diff(relevant_offsets), device=device))
    is_relevant[rows, torch.as_tensor(relevant, device=device)] = True
    first = torch.zeros(len(q), dtype=torch.long, device=device)
    for start in range(0, len(q), 512):
        part = slice(start, start + 512)
        distance = torch.cdist(vectors[q[part]].double(), vectors.double(), p=1)
        distance[torch.arange(distance.shape[0], device=device), q[part]] = math.inf
        top = torch.topk(distance, TOP, largest=False, sorted=True).indices
        hit = torch.gather(is_relevant[part], 1, top)
        rank = torch.where(hit.any(1), hit.float().argmax(1) + 1, torch.zeros_like(hit[:, 0], dtype=torch.long))
        first[part] = rank
    found = first > 0
    return {"recall@1": float((first == 1).double().mean()), "recall@10": float(found.double().mean()),
            "mrr@10": float(torch.where(found, 1.0 / first.clamp(min=1).double(), 0.0).mean())}


def build_encoder(config: dict, vectors: np.ndarray):
    """The encoder of ``config``: ids [B, T] and lengths [B] → vectors [B, d]."""
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    def keras_init(lstm) -> None:  # Keras's LSTM initialisers: Glorot kernel, orthogonal recurrent, forget bias 1
        for name, p in lstm.named_parameters():
            if name.startswith("weight_ih"):
                nn.init.xavier_uniform_(p)
            elif name.startswith("weight_hh"):
                nn.init.orthogonal_(p)
            else:
                nn.init.zeros_(p)
                if name.startswith("bias_ih"):
                    p.data[lstm.hidden_size : 2 * lstm.hidden_size] = 1.0

    class BiLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding.from_pretrained(torch.tensor(vectors), freeze=not config["tune_vectors"],
                                                      padding_idx=0)
            first, second = config["units"]
            self.lstm1 = nn.LSTM(vectors.shape[1], first, batch_first=True, bidirectional=True)
            self.lstm2 = nn.LSTM(2 * first, second, batch_first=True, bidirectional=True)
            keras_init(self.lstm1), keras_init(self.lstm2)
            self.dropout = nn.Dropout(0.2)

        def forward(self, ids, lengths):
            packed = pack_padded_sequence(self.embed(ids), lengths, batch_first=True, enforce_sorted=False)
            states, _ = pad_packed_sequence(self.lstm1(packed)[0], batch_first=True)
            packed = pack_padded_sequence(self.dropout(states), lengths, batch_first=True, enforce_sorted=False)
            final = self.lstm2(packed)[1][0]  # [2, B, units]: forward at the last character, backward at the first
            return self.dropout(torch.cat([final[0], final[1]], -1))

    class Transformer(nn.Module):
        def __init__(self):
            super().__init__()
            width = config["width"]
            self.embed = nn.Embedding.from_pretrained(torch.tensor(vectors), freeze=not config["tune_vectors"],
                                                      padding_idx=0)
            self.project = nn.Linear(vectors.shape[1], width)
            self.position = nn.Embedding(128, width)
            layer = nn.TransformerEncoderLayer(width, 8, 4 * width, dropout=0.1, batch_first=True, norm_first=True)
            self.layers = nn.TransformerEncoder(layer, config["layers"], enable_nested_tensor=False)
            self.out = nn.Linear(width, config["out"])

        def forward(self, ids, lengths):
            mask = ids > 0
            x = self.project(self.embed(ids)) + self.position(torch.arange(ids.shape[1], device=ids.device))
            x = self.layers(x, src_key_padding_mask=~mask)
            mean = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
            return torch.tanh(self.out(mean))

    return BiLSTM() if config["kind"] == "bilstm" else Transformer()


def in_batch_loss(a, b, left_groups, right_groups, temperature: float = 0.5):
    """``siamsearch.training.in_batch_loss`` without hard negatives, for positive pairs only."""
    import torch

    logits = -torch.cdist(a, b, p=1) / temperature
    n = len(a)
    paraphrase = (left_groups[:, None] == right_groups[None, :]) & ~torch.eye(n, dtype=torch.bool, device=a.device)
    logits = logits.masked_fill(paraphrase, -1e9)
    targets = torch.arange(n, device=a.device)
    cross = torch.nn.functional.cross_entropy
    return (cross(logits, targets) + cross(logits.T, targets)) / 2


def _batches(lengths: np.ndarray, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Pairs bucketed by their longer side's length, ties and batch order re-drawn each epoch
    (as ``siamsearch.batching.epoch_batches``)."""
    order = np.lexsort((rng.random(len(lengths)), lengths))
    chunks = [order[i : i + size] for i in range(0, len(order), size)]
    rng.shuffle(chunks)
    return chunks


def train_one(name: str, config: dict, data: dict, device, epochs: int = EPOCHS, seed: int = 0, log=print) -> dict:
    """Train ``config``; score every epoch's averaged weights on dev and test; keep the best dev epoch."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    encoder = build_encoder(config, data["vectors"]).to(device)
    margin = torch.nn.Parameter(torch.tensor(5.0, device=device))
    log_scale = torch.nn.Parameter(torch.tensor(0.0, device=device))
    parameters = [p for p in encoder.parameters() if p.requires_grad] + [margin, log_scale]
    optimizer = torch.optim.NAdam(parameters, lr=config.get("lr", LEARNING_RATE), eps=1e-7)
    warmup = max(1, config.get("warmup_steps", 0))  # the rate grows linearly over the first steps
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    swa = torch.optim.swa_utils
    average = swa.AveragedModel(encoder, multi_avg_fn=swa.get_ema_multi_avg_fn(0.998))

    ids = torch.as_tensor(data["train_ids"].astype(np.int64), device=device)
    lengths = torch.as_tensor(data["train_lengths"].astype(np.int64))  # on the CPU, as packing wants them
    left, right = data["train_left"], data["train_right"]
    labels = torch.as_tensor(data["train_labels"], device=device)
    groups = torch.as_tensor(data["train_groups"], device=device)
    longer = np.maximum(data["train_lengths"][left], data["train_lengths"][right])

    def encode(model, rows: np.ndarray):
        """The rows' sentences, with characters masked at random."""
        batch_lengths = lengths[rows]
        batch = ids[torch.as_tensor(rows, device=device), : int(batch_lengths.max())]
        batch = torch.where((batch > 0) & (torch.rand(batch.shape, device=device) < MASK_PROBABILITY), OOV, batch)
        return model(batch, batch_lengths)

    corpora = {split: (torch.as_tensor(data[f"{split}_ids"].astype(np.int64), device=device),
                       torch.as_tensor(data[f"{split}_lengths"].astype(np.int64))) for split in SPLITS}

    def evaluate(split: str) -> dict:
        average.eval()
        corpus_ids, corpus_lengths = corpora[split]
        with torch.no_grad():
            vectors = torch.cat([average.module(corpus_ids[i : i + 2048, : int(corpus_lengths[i : i + 2048].max())],
                                                corpus_lengths[i : i + 2048]) for i in range(0, len(corpus_ids), 2048)])
        return metrics_of(vectors, data[f"{split}_queries"], data[f"{split}_relevant_offsets"],
                          data[f"{split}_relevant"])

    history, started = [], time.perf_counter()
    for epoch in range(1, epochs + 1):
        encoder.train()
        epoch_started = time.perf_counter()
        for b in _batches(longer, config["batch"], rng):
            rows = np.concatenate([left[b], right[b]])
            encoded = encode(encoder, rows)
            a, c = encoded[: len(b)], encoded[len(b) :]
            y = labels[b]
            distance = (a - c).abs().sum(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits((margin - distance) * torch.exp(-log_scale), y)
            positive = y >= 0.5
            if positive.any():
                left_groups = groups[torch.as_tensor(left[b], device=device)][positive]
                right_groups = groups[torch.as_tensor(right[b], device=device)][positive]
                loss = loss + in_batch_loss(a[positive], c[positive], left_groups, right_groups)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            average.update_parameters(encoder)
        record = {"epoch": epoch, "loss": loss.item(), "seconds": round(time.perf_counter() - epoch_started, 2),
                  **{split: evaluate(split) for split in SPLITS}}
        history.append(record)
        log(f"{name} epoch {epoch}: dev MRR@10 {record['dev']['mrr@10']:.4f} recall@10 {record['dev']['recall@10']:.4f}"
            f" ({record['seconds']} s)")
    best = max(history, key=lambda r: r["dev"]["mrr@10"])
    parameters_count = sum(p.numel() for p in encoder.parameters() if p.requires_grad)
    return {"config": config, "trainable_parameters": parameters_count, "best_epoch": best["epoch"],
            "dev": best["dev"], "test": best["test"], "seconds": round(time.perf_counter() - started, 1),
            "history": history}


def run(data_file: Path, out: Path, names: list[str], limit: int | None, epochs: int | None) -> None:
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = dict(np.load(data_file))
    shipped = json.loads(str(data.pop("shipped_metrics")))
    for split in SPLITS:  # the probe's metric code against siamsearch's, on the shipped model's vectors
        ours = metrics_of(torch.as_tensor(data[f"{split}_shipped"], device=device), data[f"{split}_queries"],
                          data[f"{split}_relevant_offsets"], data[f"{split}_relevant"])
        gap = max(abs(ours[k] - shipped[split][k]) for k in ours)
        print(f"metric check, {split}: {ours} against siamsearch's {shipped[split]}", flush=True)
        if gap > 1e-9:
            sys.exit(f"the probe's metrics differ from siamsearch's by {gap} on {split}; fix metrics_of first")
    if limit:  # a smoke test: the first pairs only
        for key in ("train_left", "train_right", "train_labels"):
            data[key] = data[key][:limit]
    results = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
               "torch": torch.__version__, "shipped": shipped, "limit": limit, "runs": {}}
    for name in names:
        config = CONFIGS[name]
        results["runs"][name] = train_one(name, config, data, device, epochs or config.get("epochs", EPOCHS),
                                          log=lambda line: print(line, flush=True))
        out.write_text(json.dumps(results, indent=1))  # after each run: a later one may not finish
        r = results["runs"][name]
        print(f"{name}: best epoch {r['best_epoch']}, dev {r['dev']}, test {r['test']}, {r['seconds']} s", flush=True)


def merged(files: list[Path]) -> dict:
    """The runs of several ``run`` results (GPU loans) as one table: only if they scored the same
    shipped model on the same data; differing devices or PyTorch versions are listed together."""
    results = json.loads(files[0].read_text())
    for file in files[1:]:
        more = json.loads(file.read_text())
        for key in ("shipped", "limit"):
            if more[key] != results[key]:
                sys.exit(f"{file}: its {key} differs from {files[0]}'s; report them separately")
        for key in ("device", "torch"):
            if more[key] not in results[key].split(" / "):
                results[key] += f" / {more[key]}"
        results["runs"].update(more["runs"])
    return results


def markdown(results: dict) -> str:
    shipped = results["shipped"]
    lines = [
        "<!-- capacity_probe-benchmarks:start (written by bench/capacity_probe.py; do not edit by hand) -->",
        "## Retrieval with more capacity: a GPU probe (PyTorch, not the product)",
        "",
        "Command: `python bench/capacity_probe.py prepare bench/.work/probe.npz`, then on a GPU machine "
        f"`python bench/capacity_probe.py run bench/.work/probe.npz --out results.json` ({results['device']}, "
        f"PyTorch {results['torch']}), then `python bench/capacity_probe.py report results.json [more.json …]` "
        "(the runs of later GPU loans added to the first's). What it keeps "
        "of the product and what it changes: the docstring of bench/capacity_probe.py. Labelled retrieval on each "
        "file alone (the task of issue 5), at the epoch with the best dev MRR@10; test is reported, never chosen on.",
        "",
        "| encoder | trainable parameters | epochs run / kept | dev MRR@10 (last epoch) | dev recall@10 "
        "| test MRR@10 | test recall@1 | test recall@10 | s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| the shipped model (Keras, 2-core CPU; `--preset search`): BiLSTM 128/32 → 64-d, vectors frozen, "
        f"batch 512 | 0.5 M | {shipped['training']['epochs_run']} / {shipped['training']['epoch_kept']} "
        f"| {shipped['dev']['mrr@10']:.3f} (—) "
        f"| {shipped['dev']['recall@10']:.3f} | {shipped['test']['mrr@10']:.3f} | {shipped['test']['recall@1']:.3f} "
        f"| {shipped['test']['recall@10']:.3f} | {shipped['training']['seconds']:.0f} |",
    ]
    for name, r in results["runs"].items():
        c = r["config"]
        what = (f"BiLSTM {c['units'][0]}/{c['units'][1]} → {2 * c['units'][1]}-d" if c["kind"] == "bilstm" else
                f"Transformer, {c['layers']} layers of {c['width']}, mean-pooled → {c['out']}-d")
        what += f", vectors {'tuned' if c['tune_vectors'] else 'frozen'}, batch {c['batch']}"
        what += f", learning rate {c.get('lr', LEARNING_RATE):g}"
        if c.get("warmup_steps"):
            what += f" after {c['warmup_steps']} warm-up steps"
        lines.append(f"| `{name}`: {what} | {r['trainable_parameters'] / 1e6:.1f} M | {len(r['history'])} / "
                     f"{r['best_epoch']} | {r['dev']['mrr@10']:.3f} ({r['history'][-1]['dev']['mrr@10']:.3f}) | "
                     f"{r['dev']['recall@10']:.3f} | "
                     f"**{r['test']['mrr@10']:.3f}** | {r['test']['recall@1']:.3f} | {r['test']['recall@10']:.3f} "
                     f"| {r['seconds']:.0f} |")
    lines += ["", "s: the shipped model's training on a 2-core CPU; each probe's training and per-epoch scoring on "
              "the GPU. Issue 5's targets on bq/test alone: MRR@10 ≥ 0.594 (2 × BM25's 0.297), recall@10 ≥ 0.80.",
              "<!-- capacity_probe-benchmarks:end -->", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("prepare", help="here, with siamsearch: write the probe's data file")
    p.add_argument("out", type=Path)
    p.add_argument("--data", type=Path, default=HERE.parents[1] / "shared" / "data" / "bq")
    p.add_argument("--model", default=None, help="the model whose vocabulary and vectors to use (default: shipped)")
    p = verbs.add_parser("run", help="with PyTorch (a GPU): train the configurations, write their results")
    p.add_argument("data", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {', '.join(CONFIGS)}")
    p.add_argument("--limit", type=int, help="train on the first N pairs only (a smoke test)")
    p.add_argument("--epochs", type=int, help="override every configuration's epochs (a smoke test)")
    p = verbs.add_parser("report", help="here: save the results and write their docs section")
    p.add_argument("results", type=Path, nargs="+", help="one or more run results; later runs are added to the first's")
    p.add_argument("--no-write", action="store_true", help="keep the results in bench/results/; leave docs/ alone")
    args = parser.parse_args()
    if args.verb == "prepare":
        sys.path.insert(0, str(HERE.parent))
        prepare(args.out, args.data, args.model)
    elif args.verb == "run":
        run(args.data, args.out, args.configs.split(","), args.limit, args.epochs)
    else:
        sys.path.insert(0, str(HERE))
        from report import publish

        publish("capacity_probe", merged(args.results), markdown, not args.no_write)


if __name__ == "__main__":
    main()
