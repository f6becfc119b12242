"""One line saying what a deploy wrote: target, plan, layers, size against the source, blocks written twice."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from painters.plans import Plan
from painters.targets.gguf_io import read_painters_metadata

__all__ = ["summary", "read_provenance", "disk_bytes"]


def read_provenance(path: str | Path) -> dict | None:
    """The ``painters`` record of a deployed checkpoint directory or GGUF (None: not deployed by painters)."""
    path = Path(path)
    if path.is_dir():
        config = path / "config.json"
        return json.loads(config.read_text()).get("painters") if config.is_file() else None

    return read_painters_metadata(path)


def disk_bytes(path: str | Path) -> int:
    """Bytes of a file, or of the weight files of a checkpoint directory."""
    path = Path(str(path))
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf"))
    if str(path) == "smollm2-135m":
        from painters.export.sources import smollm2_path

        return smollm2_path().stat().st_size
    return 0


def summary(out: str | Path, src: str | Path) -> str:
    """``OUT: gguf, plan skip_4_26 (8 of 30 layers), 51.2 MiB (27% of the source)``, naming repeated blocks."""
    record = read_provenance(out) or {}
    plan = Plan.from_json(record["plan"]) if "plan" in record else None
    size, before = disk_bytes(out), disk_bytes(src)
    text = f"{out}: {record.get('target', '?')}"
    if plan is not None:
        text += f", plan {plan.name} ({plan.block_evals} layers from {plan.num_layers})"
    text += f", {size / 2**20:.1f} MiB"
    if before:
        text += f" ({100 * size / before:.0f}% of the source's {before / 2**20:.1f} MiB)"
    if plan is not None:
        twice = sorted(b for b, n in Counter(b for s in plan.stages() for b in s.blocks).items() if n > 1)
        if twice:
            text += f"; blocks {twice} are written once per occurrence (weights have no aliasing)"
    return text
