"""Errors a user can cause and fix.

Every exception raised on purpose by siamsearch derives from :class:`SiamsearchError`;
its message is one line that names the thing at fault and says what to do in the terms of
the Python API (argument names, not command-line flags), so that any front end can show it
as-is. The fields ``path``, ``line`` and ``argument`` say where the fault lies, so that a
front end can map it: the CLI names its flag for ``argument``, an HTTP service answers 4xx.
"""

from __future__ import annotations

from pathlib import Path


class SiamsearchError(Exception):
    """Base class: a problem with the user's input, files or arguments."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None,
                 argument: str | None = None):
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        self.argument = argument

    def fields(self) -> dict:
        """The message and whichever of path, line and argument are known (e.g. for a JSON error body)."""
        found = {"path": self.path, "line": self.line, "argument": self.argument}
        return {"message": self.message, **{k: v for k, v in found.items() if v is not None}}


class InputError(SiamsearchError):
    """A bad input file, argument value or query."""


class UnknownFieldError(InputError):
    """A filter names a metadata field that no document has (HTTP: 400): a typo, most likely."""


class NotFoundError(InputError):
    """A document id (or other named thing) that does not exist (HTTP: 404)."""


class ConflictError(SiamsearchError):
    """Another writer holds the index or committed since it was loaded: load it again and retry (HTTP: 409)."""


BUILD_INDEX = "build one first"
REBUILD_INDEX = "rebuild the index"
TRAIN_MODEL = "train one first"
ADD_LEXICAL = "add it with SearchIndex.compact(lexical=True)"
RETRAIN_MODEL = "train the model again or copy the whole directory"
"""Remedies in the API's words; a front end may name its own command for them (the CLI does)."""


class _DirectoryError(SiamsearchError):
    """A directory siamsearch wrote that is missing, incomplete or corrupted."""

    remedy = ""

    @classmethod
    def damaged(cls, path: str | Path, why: str) -> _DirectoryError:
        """``PATH: why; <remedy>``: the one shape of every "this directory is broken" error."""
        return cls(f"{path}: {why}; {cls.remedy}", path=path)


class ModelDirectoryError(_DirectoryError):
    """A model directory that is missing, incomplete or corrupted."""

    remedy = RETRAIN_MODEL


class IndexDirectoryError(_DirectoryError):
    """An index directory that is missing, incomplete, corrupted or built with another encoder."""

    remedy = REBUILD_INDEX
