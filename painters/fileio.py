"""Atomic output files and content hashes: nothing half-written, inputs never touched."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_dir_outputs", "file_hash", "check_output_path", "check_outputs", "write_atomic", "write_json"]

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


def _same_file(a: Path, b: Path) -> bool:
    """Same path after resolving symlinks, or the same inode (hard links)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(outputs, inputs) -> None:
    """Refuse writing any of ``outputs`` when it is (or links to) one of ``inputs`` or is not a regular file.

    Why one check for every command: the outputs a command writes include side files (``.onnx.data``,
    tokenizer files, ``generation_config.json``, engine sidecars), and comparing only the main path let
    ``-o M/model.onnx.data`` overwrite the input's weights. Callers pass everything they read and write.
    A name over 255 bytes is refused here too, before any long run, instead of failing with OSError later.
    """
    from painters.errors import PaintersError

    inputs = [Path(p) for p in inputs if p is not None and Path(p).exists()]
    for out in (Path(o) for o in outputs if o is not None):
        if len(os.fsencode(out.name)) > 255:
            raise PaintersError(f"output name {out.name[:40]}... is {len(os.fsencode(out.name))} bytes; file "
                                "systems allow 255; choose a shorter path with -o")
        if os.path.lexists(out):
            if not out.resolve().exists() or not out.resolve().is_file():
                kind = "a directory" if out.is_dir() else "not a regular file"
                raise PaintersError(f"output {out} exists and is {kind}; refusing to replace it; choose a "
                                    "regular file path with -o")
        for src in inputs:
            if out.exists() and _same_file(out, src):
                raise PaintersError(f"output {out} would overwrite the input {src}; choose another path with -o")


def check_output_path(out: Path, *inputs: Path) -> None:
    """Refuse an output that would overwrite an input or land in a missing/unwritable directory."""
    from painters.errors import PaintersError

    check_outputs([out], [p for p in inputs if p is not None and not Path(p).is_dir()])

    out = Path(out).resolve()
    for src in inputs:
        if src is None or not Path(src).exists():
            continue
        src = Path(src).resolve()
        if out == src or (src.is_dir() and out.is_relative_to(src) and out.exists()):
            raise PaintersError(f"output {out} would overwrite the input {src}; choose another path with -o")
    if out.is_dir():
        raise PaintersError(f"output {out} is a directory; give a file path such as {out / 'model.onnx'}")
    ancestor = out.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK):
        raise PaintersError(f"cannot create the output directory {out.parent}: {ancestor} is not a writable "
                            "directory; choose another path with -o")


@contextlib.contextmanager
def atomic_dir_outputs(out: Path) -> Iterator[Path]:
    """Yield a private temp directory; on success move every file in it next to ``out``.

    The caller writes ``tmp / out.name`` and any side files (external data, tokenizer) into the temp
    directory. On error nothing appears beside ``out``; on success files are renamed into place, the
    main file last, so a reader never sees a graph whose data is missing.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        entries = sorted(tmp.iterdir(), key=lambda p: p.name == out.name)
        for entry in entries:
            target = out.parent / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(entry, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_atomic(path: str | os.PathLike, data: bytes | memoryview) -> Path:
    """Write ``data`` via a temp file in the same directory and a rename, so readers never see a partial file.

    The file gets the mode an ordinary new file gets (0666 less the umask), not mkstemp's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, data: object) -> Path:
    """Write ``data`` as indented JSON (one trailing newline) with :func:`write_atomic`."""
    import json

    return write_atomic(path, (json.dumps(data, indent=2, allow_nan=True) + "\n").encode())
