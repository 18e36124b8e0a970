"""Atomic writes: a reader sees the old state or the new one, never half of either.

Files are written to a temporary sibling, flushed to disk and renamed over the target
(``os.replace`` is atomic on POSIX and Windows). Directories are staged beside their
target and exchanged with it atomically (Linux ``renameat2(RENAME_EXCHANGE)``); where
that call is missing they are swapped in with two renames, and if the second fails the
old directory is put back.
Writers of one directory exclude each other with ``writer_lock`` (an ``flock`` on a
``.lock`` file; released by the OS if the process dies, so a crash never leaves it stuck).
Readers hold ``reader_lock`` (a shared ``flock``) on a directory only while they open its
files, and ``remove_unless_read`` deletes a directory only when no reader holds it: once
open, files stay readable on POSIX even after they are deleted.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from .errors import ConflictError, InputError, SiamsearchError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer at a time is then up to the user
    fcntl = None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read a megabyte at a time (index files can be gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_output_dir(path: Path, is_ours: Callable[[Path], bool], what: str, ignore_hidden: bool = False) -> None:
    """Refuse an output path that exists and is neither empty nor ``what`` (``is_ours``), before
    any long work: writing there must never wipe a user's folder. ``ignore_hidden``: files whose
    name starts with a dot do not count (an index folder's ``.lock`` exists before its first commit)."""
    path = Path(path)
    if not path.exists():
        return
    if path.is_dir():
        entries = [p for p in path.iterdir() if not (ignore_hidden and p.name.startswith("."))]
        if not entries or is_ours(path):
            return
    raise InputError(f"{path}: exists and is not {what}; choose another output path", path=path)


def fsync_path(path: Path) -> None:
    """Flush a file or directory entry to disk (directories: best effort, not on Windows)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() and hasattr(os, "O_DIRECTORY") else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):
        fsync_path(path)
    fsync_path(root)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise SiamsearchError(f"{path}: cannot write ({e.strerror})") from None
    fsync_path(path.parent)


def write_json_atomic(path: Path, obj: object) -> None:
    write_bytes_atomic(path, (json.dumps(obj, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))


def write_json(path: Path, obj: object) -> None:
    """Plain write, for files inside a staging directory that no reader can see yet."""
    Path(path).write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None) if os.name == "posix" else None
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this kernel or filesystem cannot exchange
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    """Yield an empty staging directory; on success it replaces ``target``, on error it vanishes."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as e:
        raise SiamsearchError(f"{target}: cannot create ({e.strerror})") from None
    try:
        yield stage
        fsync_tree(stage)
        if target.exists() and _exchange(stage, target):
            shutil.rmtree(stage, ignore_errors=True)  # now holds the old directory
        elif target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / "x")
            try:
                os.replace(stage, target)
            except OSError:
                os.replace(old / "x", target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, target)
        fsync_path(target.parent)
    except OSError as e:
        raise SiamsearchError(f"{target}: cannot write ({e.strerror})") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@contextmanager
def writer_lock(directory: Path) -> Iterator[None]:
    """Hold the directory's writer lock, or fail at once if another process holds it. A
    directory this call created is removed again when the work under the lock fails or is
    interrupted before anything but the lock file is in it: a failed first build leaves no
    folder behind."""
    directory = Path(directory)
    created, top = not directory.exists(), directory  # top: the first folder this call creates
    while not top.parent.exists():
        top = top.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise SiamsearchError(f"{directory}: cannot write ({e.strerror})") from None
    failed = False
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                created = False  # the other writer's folder
                raise ConflictError(
                    f"{directory}: another process is writing it; try again when it has finished") from None
        yield
    except BaseException:
        failed = True
        raise
    finally:
        if failed and created and {p.name for p in directory.iterdir()} <= {".lock"}:
            (directory / ".lock").unlink(missing_ok=True)
            for folder in (directory, *directory.parents):  # up to the first one created here, if empty
                with suppress(OSError):
                    folder.rmdir()
                if folder == top:
                    break
        os.close(fd)  # also releases the lock


@contextmanager
def waiting_lock(lock_file: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file``, waiting up to ``timeout`` seconds for other
    processes (writers that queue behind each other, unlike ``writer_lock``, which fails fast)."""
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise SiamsearchError(f"{lock_file.parent}: cannot write ({e.strerror})") from None
    try:
        deadline = time.monotonic() + timeout
        while fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConflictError(f"{lock_file.parent}: other writers held it for {timeout:.0f} s; "
                                        "try again later") from None
                time.sleep(0.005)
        yield
    finally:
        os.close(fd)


@contextmanager
def reader_lock(lock_file: Path) -> Iterator[None]:
    """Hold a shared lock on ``lock_file`` (FileNotFoundError if it is gone: the directory was removed)."""
    fd = os.open(lock_file, os.O_RDONLY)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_SH)
        if os.fstat(fd).st_nlink == 0:  # we waited on a writer that was deleting the directory
            raise FileNotFoundError(lock_file)
        yield
    finally:
        os.close(fd)


def remove_unless_read(directory: Path, lock_name: str) -> bool:
    """Delete ``directory`` unless a reader holds its lock; False if busy (a later writer retries)."""
    try:
        fd = os.open(directory / lock_name, os.O_RDONLY)
    except OSError:
        shutil.rmtree(directory, ignore_errors=True)
        return True
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
        shutil.rmtree(directory, ignore_errors=True)
        return True
    finally:
        os.close(fd)
