"""Metadata filters: which documents a search may return, chosen *before* ranking.

A filter (``where``) maps a metadata field to a value or to a list of values: a document
matches when, for every field named, its value equals the value or one of the values.
Values are JSON scalars compared as SQLite compares JSON values: ``"3"`` does not match
``3``, ``1`` matches ``1.0``, and ``true`` matches ``1`` (SQLite has no boolean).

The matching documents are selected in SQLite (``documents.Documents.select``), then
``query.py`` ranks only them, so ``k`` hits come back whenever ``k`` documents match; tools
that filter the top ``k`` after ranking return fewer, or none.
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import InputError

Where = Mapping[str, object]
"""field → value, or field → list of values."""
MAX_FIELDS = 16
MAX_VALUES = 1000  # values of one field, all bound as SQL parameters
_SCALARS = (str, int, float, bool)
NO_MATCH = "no documents match the filter"
"""What a front end says when a search has no hits because its filter keeps no document
(``SearchIndex.count(where) == 0``); a field no document has is an ``UnknownFieldError`` instead."""


def check_where(where: Where) -> dict[str, tuple]:
    """The filter as field → tuple of values, or an ``InputError`` naming what is wrong with it."""
    if not isinstance(where, Mapping):
        raise InputError(f"a filter maps metadata fields to values, got {type(where).__name__}", argument="where")
    if not where:
        raise InputError("the filter is empty: name at least one metadata field, or pass no filter",
                         argument="where")
    if len(where) > MAX_FIELDS:
        raise InputError(f"a filter names at most {MAX_FIELDS} fields, got {len(where)}", argument="where")
    checked = {}
    for field, value in where.items():
        if not isinstance(field, str) or not field.strip() or '"' in field or not field.isprintable():
            raise InputError(f"filter field {field!r} is not a field name: use printable text without '\"'",
                             argument="where")
        values = tuple(value) if isinstance(value, (list, tuple, set, frozenset)) else (value,)
        if not values:
            raise InputError(f"filter field {field!r} has an empty list of values: give at least one",
                             argument="where")
        if len(values) > MAX_VALUES:
            raise InputError(f"filter field {field!r} has {len(values):,} values; at most {MAX_VALUES:,}",
                             argument="where")
        for v in values:
            if not isinstance(v, _SCALARS) or (isinstance(v, float) and v != v):
                raise InputError(f"filter field {field!r}: {v!r} is not a text, number or true/false value",
                                 argument="where")
        checked[field] = values
    return checked


def where_sql(where: dict[str, tuple]) -> tuple[str, list]:
    """The SQL condition on the ``metadata`` column, and its parameters, for a checked filter."""
    clauses, params = [], []
    for field, values in where.items():
        clauses.append(f"json_extract(metadata, ?) IN ({','.join('?' * len(values))})")
        params += [f'$."{field}"', *values]
    return " AND ".join(clauses), params


def cache_key(where: dict[str, tuple]) -> tuple:
    """A hashable key of a checked filter; the order of fields and values does not matter."""
    return tuple(sorted((f, tuple(sorted(map(repr, vs)))) for f, vs in where.items()))
