"""Atomic output files and content hashes: nothing half-written, inputs never touched."""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from painters.cache import cache_dir
from painters.errors import PaintersError
from painters.plans import split_plans

__all__ = ["atomic_dir_outputs", "atomic_write", "write_json", "file_hash", "check_outputs", "check_output_dir",
           "command_reads", "model_files", "same_file", "clean_stale_temps", "disk_error"]

log = logging.getLogger(__name__)

_FULL_HASH_LIMIT = 1 << 30


def file_hash(path: str | os.PathLike, *, limit: int = _FULL_HASH_LIMIT) -> str:
    """sha256 of a file; files over ``limit`` bytes hash their size and three 8 MiB samples.

    Why sampled: hashing a 13 GB checkpoint on every compile would dominate the compile time, and the
    hash only has to tell models apart, not prove integrity.
    """
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= limit:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        else:
            h.update(f"sampled:{size}".encode())
            for offset in (0, size // 2, size - (8 << 20)):
                f.seek(offset)
                h.update(f.read(8 << 20))
    return h.hexdigest()


def same_file(a: Path, b: Path) -> bool:
    """Same path after resolving symlinks, or the same inode (hard links)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def model_files(model: str | os.PathLike) -> list[Path]:
    """Files a run reads through MODEL: a graph or engine file with its siblings, or a checkpoint folder.

    A model file reads the files beside it that share its name (``.onnx.data``, an engine's sidecar) and the
    tokenizer/config side files; a folder (a checkpoint, a GenAI folder) is read whole; a built-in source name
    (``tiny-llama``) reads nothing of the user's.
    """
    from painters.compiler.graph_io import SIDE_FILES

    path = Path(model)
    if path.is_file():
        return [path, *(f for f in path.parent.glob(f"{glob.escape(path.name)}*") if f.is_file()),
                *(path.parent / n for n in (*SIDE_FILES, "config.json"))]
    return [path] if path.is_dir() else []


def command_reads(*paths: str | os.PathLike | None, models: Iterable[str | os.PathLike | None] = (),
                  plans: str | Iterable[str | None] | None = None) -> list[Path]:
    """Every file a command reads, from its arguments: what :func:`check_outputs` must never write over.

    ``paths``: files and folders read as they are (scores, calibration, a data folder — every file under it —,
    a source checkpoint folder, result files); ``models``: model arguments, with their side files
    (:func:`model_files`); ``plans``: plan arguments (a name, a comma list, or a list of them), of which the
    plan files are read. Missing paths and ``None`` are skipped.

    Why one function: each command used to list its own inputs and each forgot some (the scores file, the
    plan file, the checkpoint's config.json, the task data), and an output named after one destroyed it.
    """
    reads = [Path(p) for p in paths if p is not None and os.path.lexists(p)]
    for model in models:
        if model is not None:
            reads += model_files(model)
    if isinstance(plans, str):
        plans = [plans]
    for spec in plans or ():
        if spec is None:
            continue

        reads += [Path(n) for n in {spec, *split_plans(spec)} if os.path.lexists(n)]
    return reads


def check_outputs(outputs: Iterable[str | os.PathLike | None], inputs: Iterable[str | os.PathLike | None] = ()
                  ) -> None:
    """Refuse writing any of ``outputs`` before any work is done; raise a one-line :class:`PaintersError`.

    Refused: an output that is (or links to) one of ``inputs`` or an existing file inside an input
    directory; an existing output that is not a regular file (FIFO, device, directory); a name over 255
    bytes; an output whose directory cannot be created or written.

    Why one check for every command: the outputs a command writes include side files (``.onnx.data``,
    tokenizer files, ``generation_config.json``, engine sidecars), and comparing only the main path let
    ``-o M/model.onnx.data`` overwrite the input's weights. Callers pass everything they read and write.
    Checking before the run turns a failure that used to come after minutes of work into one in seconds.
    Two outputs naming one file (``--json`` and ``--plot``) are refused too: the second would replace the
    first. Build ``inputs`` with :func:`command_reads`.
    """
    inputs = [Path(p) for p in inputs if p is not None and Path(p).exists()]
    outputs = [Path(o) for o in outputs if o is not None]
    for out in outputs:
        for part in out.parts:
            if len(os.fsencode(part)) > 255:
                raise PaintersError(f"output name {part[:40]}... is {len(os.fsencode(part))} bytes; file "
                                    "systems allow 255; choose a shorter path with -o")
        if len(os.fsencode(str(out.absolute()))) >= 4096:
            raise PaintersError(f"output path {str(out)[:40]}... is over 4096 bytes; choose a shorter path with -o")
        if out.is_dir():
            raise PaintersError(f"output {out} is a directory; give a file path such as {out / 'model.onnx'}")
        if os.path.lexists(out) and not out.is_file():
            raise PaintersError(f"output {out} exists and is not a regular file; refusing to replace it; choose "
                                "a regular file path with -o")
        for src in inputs:
            # the folder's own path, not the file's target: a data folder of symlinks is still the data
            inside = src.is_dir() and any(o.is_relative_to(src.resolve())
                                          for o in (out.resolve(), out.parent.resolve() / out.name))
            if out.exists() and (inside or same_file(out, src)):
                raise PaintersError(f"output {out} would overwrite the input {src}; choose another path with -o")
        ancestor = out.absolute().parent
        while not os.path.lexists(ancestor):
            ancestor = ancestor.parent
        if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
            raise PaintersError(f"cannot write {out}: {ancestor} is not a writable directory; choose another "
                                "path with -o")
    for i, out in enumerate(outputs):
        for other in outputs[:i]:
            if out.absolute() == other.absolute() or (out.exists() and same_file(out, other)):
                raise PaintersError(f"outputs {other} and {out} name one file; the second would replace the "
                                    "first; give each output its own path")


def check_output_dir(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """Refuse an output *folder* (sweep, reproduce, fine-tuning) that is an input or lies inside an input folder.

    Why: a run folder is filled with many files (``config.json``, ``runs/``, ``report.md``); put inside a
    checkpoint or the task data it replaced their files. Build ``inputs`` with :func:`command_reads`.
    """
    out = Path(out)
    if os.path.lexists(out) and not out.is_dir():
        raise PaintersError(f"output folder {out} exists and is not a folder; choose a folder path with -o")
    target = out.resolve()
    for src in (Path(p) for p in inputs if p is not None and os.path.lexists(p)):
        if src.resolve() == target or (src.is_dir() and target.is_relative_to(src.resolve())):
            raise PaintersError(f"output folder {out} would write into the input {src}; choose another folder "
                                "with -o")


# Temp directories are named ``.OUT.painters-HOST-PID-XXXX`` so a later run can tell a dead run's leftovers
# (SIGKILL skips every ``finally``) from a live run's work in progress.
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"
_TEMP_RE = re.compile(r"\.(?P<name>.+)\.painters-(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-[A-Za-z0-9_]+\Z")


def _temp_prefix(name: str) -> str:
    return f".{name}.painters-{_HOST}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (or a pid no process can have)
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale_temps(out: Path) -> list[Path]:
    """Remove temp directories of ``out`` left by runs that were killed; return what was removed.

    Only directories (not symlinks) whose name says they were made for this output, on this host, by a
    process that no longer exists, and that belong to this user, are removed: a live run's temp (even
    another user's) and anything not ours is left alone. A reused pid only makes us keep a stale one.
    """
    removed = []
    try:
        entries = list(Path(out).parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if (m is None or m["name"] != Path(out).name or m["host"] != _HOST or int(m["pid"]) == os.getpid()
                or _alive(int(m["pid"]))):
            continue
        try:
            st = entry.lstat()
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
            shutil.rmtree(entry, ignore_errors=True)
            log.info("removed %s, left by a run that was killed", entry)
            removed.append(entry)
    return removed


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the ones created, deepest first."""
    missing = []
    while not os.path.lexists(folder):
        missing.append(folder)
        folder = folder.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
    return missing


_DISK_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EFBIG: "a file-size limit was reached",
                errno.EDQUOT: "the disk quota is exhausted"}


def disk_error(exc: BaseException, out: Path) -> Exception | None:
    """A one-line PaintersError for a full disk / file-size limit anywhere in ``exc``'s chain (else None).

    Writers deep in torch or onnx may wrap the OSError, so the whole cause/context chain is searched.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
            return PaintersError(f"cannot write {out}: {_DISK_ERRNOS[exc.errno]} ({os.strerror(exc.errno)}); "
                                 "nothing was written; free space or choose another path with -o")
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def atomic_dir_outputs(out: Path) -> Iterator[Path]:
    """Yield a private temp directory; on success move every file in it next to ``out``.

    The caller writes ``tmp / out.name`` and any side files (external data, tokenizer) into the temp
    directory. On error nothing appears beside ``out`` and the parent directories this call created are
    removed again; a full disk or a file-size limit becomes a one-line :class:`PaintersError`. On success
    files are renamed into place, the main file last, so a reader never sees a graph whose data is missing.
    Temp directories of this output left by a killed run are removed first (:func:`clean_stale_temps`).
    """
    out = Path(out)
    created = _make_parents(out.parent)
    done = False
    try:
        clean_stale_temps(out)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(out.name), dir=out.parent))
        try:
            yield tmp
            entries = sorted(tmp.iterdir(), key=lambda p: p.name == out.name)
            for entry in entries:
                target = out.parent / entry.name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                os.replace(entry, target)
            done = True
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException as exc:
        error = disk_error(exc, out)
        if error is not None:
            raise error from exc
        raise
    finally:
        if not done:
            for d in created:  # deepest first; a folder someone else filled meanwhile stays
                with contextlib.suppress(OSError):
                    d.rmdir()


def atomic_write(path: str | os.PathLike, data: bytes | memoryview | str) -> Path:
    """Write ``data`` to ``path`` by rename from a temp file beside it (see :func:`atomic_dir_outputs`).

    The file gets the mode an ordinary new file gets (0666 less the umask), not mkstemp's private 0600.
    """
    path = Path(path)
    with atomic_dir_outputs(path) as tmp:
        with open(tmp / path.name, "w" if isinstance(data, str) else "wb") as f:
            f.write(data)
    return path


def write_json(path: str | os.PathLike, data: object, *, indent: int = 2) -> Path:
    """Write ``data`` as JSON by rename; if that fails, save it in a fallback file first and say where.

    Why a fallback: results come at the end of a long run; a full disk or a folder that vanished must
    not throw them away. The error names the file that holds them.
    """
    path = Path(path)
    text = json.dumps(data, indent=indent, allow_nan=True) + "\n"
    try:
        return atomic_write(path, text)
    except (OSError, PaintersError) as exc:
        for folder in (_fallback_dir(), Path(tempfile.gettempdir())):
            try:
                fd, saved = tempfile.mkstemp(prefix=f"{path.stem[:100]}.", suffix=".json", dir=folder)
                with os.fdopen(fd, "w") as f:
                    f.write(text)
            except OSError:
                continue
            raise PaintersError(f"cannot write {path} ({getattr(exc, 'strerror', None) or exc}); the results "
                                f"were saved to {saved} instead") from exc
        raise PaintersError(f"cannot write {path} ({getattr(exc, 'strerror', None) or exc}) nor a fallback copy; "
                            "the results are lost; free space and rerun") from exc


def _fallback_dir() -> Path:
    return cache_dir("results")
