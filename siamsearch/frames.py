"""pandas in and out: DataFrames as corpora and pairs, Parquet and Excel files, hits as a DataFrame.

pandas is imported here only, and only when a DataFrame, a table file or a frame of results
is asked for, so the query path does not pay for it. Table files (``.parquet``, ``.xlsx``,
``.xls``) are read through pandas with their engines (pyarrow, openpyxl; the ``formats``
extra) and then checked by the same rules as CSV files (``data.py``), with the same errors:
a row is named by its line in the table's CSV export (the header is line 1).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .errors import InputError

if TYPE_CHECKING:
    import pandas as pd


class HitLike(Protocol):
    """What ``hits_frame`` reads of a hit (``query.Hit``; named here so that this module, which
    ``data.py`` imports, does not import the query engine)."""

    rank: int
    id: str
    text: str
    score: float
    match: float | None
    metadata: dict

TABLE_ENGINES = {".parquet": "pyarrow", ".pq": "pyarrow", ".xlsx": "openpyxl", ".xls": "xlrd"}
"""Table files read through pandas, and the package each needs."""
HIT_COLUMNS = ("query", "rank", "id", "text", "score", "match")


def is_frame(obj: object) -> bool:
    """Whether ``obj`` is a pandas DataFrame (without importing pandas: if it is not imported,
    nothing is a DataFrame)."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(obj, pandas.DataFrame)


def is_table(path: Path) -> bool:
    return path.suffix.lower() in TABLE_ENGINES


def _check_engine(path: Path) -> str:
    import importlib.util

    engine = TABLE_ENGINES[path.suffix.lower()]
    if importlib.util.find_spec(engine) is None:
        raise InputError(f"{path}: reading {path.suffix} files needs {engine}: pip install 'siamsearch[formats]'",
                         path=path)
    if not path.is_file():
        raise InputError(f"{path}: no such file", path=path)
    return engine


def _cannot_read(path: Path, e: Exception) -> InputError:
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return InputError(f"{path}: cannot read it as {path.suffix} ({first})", path=path)


def read_table(path: Path) -> pd.DataFrame:
    """A Parquet or Excel file (its first sheet) as a DataFrame, or one line saying why not."""
    import pandas as pd

    engine = _check_engine(path)
    try:
        if engine == "pyarrow":
            return pd.read_parquet(path, engine="pyarrow")
        return pd.read_excel(path, sheet_name=0, engine=engine, dtype=object)
    except Exception as e:  # each engine raises its own types for a damaged or foreign file
        raise _cannot_read(path, e) from None


def iter_records(path: Path, batch_rows: int) -> Iterator[tuple[dict, int]]:
    """A table file's rows as ``records`` gives them, with their lines: a Parquet file is read
    ``batch_rows`` rows at a time (a corpus may be larger than memory); an Excel sheet whole."""
    if _check_engine(path) != "pyarrow":
        yield from zip(*records(read_table(path)))
        return
    import pyarrow.parquet as pq

    done = 0
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=batch_rows)
        for batch in batches:
            found, lines = records(batch.to_pandas())
            yield from zip(found, (line + done for line in lines))
            done += len(found)
    except InputError:
        raise
    except Exception as e:  # pyarrow raises its own types for a damaged or foreign file
        raise _cannot_read(path, e) from None


def _plain(value: object) -> object:
    """A cell as a JSON-able Python value: numpy scalars unwrapped, missing values None, times ISO text."""
    import pandas as pd

    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):  # a list or an array: not a scalar
        pass
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def records(frame: pd.DataFrame) -> tuple[list[dict], list[int]]:
    """The rows as dicts of plain values, with the line each has in the CSV export (header: line 1)."""
    columns = [str(c) for c in frame.columns]
    if len(set(columns)) != len(columns):
        raise InputError("the table repeats a column name", line=1)
    rows = [{c: _plain(v) for c, v in zip(columns, row)} for row in frame.itertuples(index=False, name=None)]
    return rows, list(range(2, len(rows) + 2))


def rows(frame: pd.DataFrame) -> tuple[list[list[str]], list[int]]:
    """The header and the rows as text fields (missing cells empty), with their lines: the
    shape ``data.read_pairs`` reads a CSV file into."""
    found, lines = records(frame)
    header = list(found[0]) if found else [str(c) for c in frame.columns]
    text = [["" if v is None else str(v) for v in record.values()] for record in found]
    return [header, *text], [1, *lines]


def hits_frame(queries: Sequence[str], results: Sequence[Sequence[HitLike]]) -> pd.DataFrame:
    """One row per hit: query, rank, id, text, score, match, then one column per metadata field
    (in the order first seen; a field named like one of those columns gets a ``metadata.`` prefix)."""
    import pandas as pd

    table, fields = [], {}
    for query, hits in zip(queries, results):
        for hit in hits:
            row = {"query": query, "rank": hit.rank, "id": hit.id, "text": hit.text, "score": hit.score,
                   "match": hit.match}
            for key, value in hit.metadata.items():
                column = f"metadata.{key}" if key in HIT_COLUMNS else key
                fields.setdefault(column, None)
                row[column] = value
            table.append(row)
    return pd.DataFrame(table, columns=[*HIT_COLUMNS, *fields])
