"""Errors a user can cause and fix.

Every exception raised on purpose by siamsearch derives from :class:`SiamsearchError`;
its message is one line that names the thing at fault and says what to do, so the CLI
can print it as-is and exit non-zero without a traceback.
"""


class SiamsearchError(Exception):
    """Base class: a problem with the user's input, files or flags."""


class InputError(SiamsearchError):
    """A bad input file, flag value or query."""


class ModelDirectoryError(SiamsearchError):
    """A model directory that is missing, incomplete or corrupted."""


class IndexDirectoryError(SiamsearchError):
    """An index directory that is missing, incomplete, corrupted or built with another encoder."""
