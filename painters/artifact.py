"""One typed record of a deployed artifact, and the one place that decides what an artifact is.

Every artifact painters writes carries the same provenance: the plan it runs (a :class:`~painters.plans.Plan`),
the KV-slot layout the compiler chose, the source's hash, the graph form, precision, deploy target and the
painters version. Where it lives differs — ONNX ``metadata_props`` (a graph, and the graph inside an ONNX Runtime
GenAI folder), an engine's JSON sidecar (the graph's metadata, recorded at build time), a deployed checkpoint's
``config.json`` under ``"painters"``, a deployed GGUF's ``painters.*`` keys — so :class:`Record` is read and
written here only (:meth:`Record.from_props` / :meth:`Record.to_props`) and nowhere else spells a key.

What an artifact *is* is decided once, by content, not by suffix (:func:`read_artifact`): a GGUF by its magic
bytes, an engine by its sidecar, a GenAI folder by ``genai_config.json``, a checkpoint directory by
``config.json`` (deployed when it holds ``"painters"``), an ONNX graph by parsing it as ONNX; anything else is a
source name (``smollm2-135m``). A new kind is one small class with a ``detect`` classmethod plus one line in
``DETECTORS``. The module imports only plans, errors and the standard library at the top; onnx and gguf-py are
imported where a file is read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from painters.errors import CompileError, PaintersError
from painters.plans import Plan, parse_plan
from painters.tensorrt_lib import read_sidecar, sidecar_path

__all__ = ["Record", "Slot", "RecordedLayout", "Source", "Graph", "Engine", "GenaiFolder", "Checkpoint",
           "DeployedGguf", "Artifact", "DETECTORS", "read_artifact", "missing_artifact", "read_graph_record",
           "graph_props", "painters_props", "PREFIX", "PLAN", "SCHEDULE", "SLOT_LAYOUT", "SOURCE_HASH", "BLOCKS"]

PREFIX = "painters."
PLAN = "painters.plan"
SCHEDULE = "painters.schedule"
SLOT_LAYOUT = "painters.slot_layout"
SOURCE_HASH = "painters.source_hash"
VERSION = "painters.version"
FORM = "painters.form"
PRECISION = "painters.precision"
TARGET = "painters.target"
BLOCKS = "painters.blocks"  # an export's block list (the compiler's discovery, recorded once)
GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class Slot:
    """One compiled KV slot: the stage that fills it, the plan slots it holds and its head count."""

    stage: int
    plan_slots: tuple[int, ...]
    heads: int | None  # None where the graph's kv heads are symbolic (foreign exports)
    in_place: bool = False  # one attention writes it and can update its buffer in place (Block.kv_in_place)
    attention: str | None = None  # the com.microsoft operator writing it (Block.fused_attention); None: decomposed


@dataclass(frozen=True)
class RecordedLayout:
    """The slot layout as a compiled graph records it: the fused stages and every compiled KV slot."""

    fused_stages: tuple[int, ...]
    slots: tuple[Slot, ...]

    @property
    def slot_heads(self) -> list[int | None]:
        """Heads per compiled slot (None where symbolic)."""
        return [s.heads for s in self.slots]

    def to_json(self) -> dict:
        """The metadata's JSON form (stable: engines and cached graphs hash it)."""
        return {"fused_stages": list(self.fused_stages),
                "slots": [{"stage": s.stage, "plan_slots": list(s.plan_slots), "heads": s.heads,
                           "in_place": s.in_place, "attention": s.attention} for s in self.slots]}

    @staticmethod
    def from_json(data) -> RecordedLayout:
        """Read :meth:`to_json`'s form back; ``KeyError``/``TypeError``/``ValueError`` on a malformed one."""
        return RecordedLayout(
            tuple(int(i) for i in data["fused_stages"]),
            tuple(Slot(int(s["stage"]), tuple(int(p) for p in s["plan_slots"]),
                       None if s["heads"] is None else int(s["heads"]), bool(s.get("in_place", False)),
                       s.get("attention")) for s in data["slots"]))


def _json(props: Mapping[str, str], key: str, what: str):
    try:
        return json.loads(props[key])
    except ValueError as exc:
        raise CompileError(f"metadata {key} of {what} is not valid JSON ({exc}); it was edited or written by "
                           "another tool — recompile it with `painters compile`") from None


@dataclass(frozen=True)
class Record:
    """The provenance an artifact carries (see the module docstring); every field is optional but the name.

    ``plan_name`` is the plan as written (``drop_attn_1,2``); ``plan`` its schedule (None: an uncompiled export,
    which runs every block once); ``extra`` holds the other ``painters.*`` keys verbatim (``kv_slots``,
    ``blocks``, ``config``, ``parent_graph_hash``…), without their prefix.
    """

    plan_name: str = "baseline"
    plan: Plan | None = None
    slot_layout: RecordedLayout | None = None
    source_hash: str = ""
    form: str | None = None
    precision: str | None = None
    target: str | None = None
    version: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def compiled(self) -> bool:
        """Whether a compile recorded a schedule (an export or a foreign graph has none)."""
        return self.plan is not None

    def ideal_ratio(self) -> float:
        """Sublayer evaluations relative to baseline (an uncompiled artifact runs baseline: 1.0)."""
        return self.plan.ideal_cost_ratio() if self.plan is not None else 1.0

    @property
    def is_baseline(self) -> bool:
        """Whether it runs every block once in order (an uncompiled export, or a compile of the identity plan)."""
        if self.plan is None:
            return self.plan_name == "baseline"
        return self.plan == parse_plan("baseline", self.plan.num_layers)

    def same_plan(self, other: Record) -> bool:
        """Whether two records run the same schedule (baseline when neither records one)."""
        if self.plan is not None and other.plan is not None:
            return self.plan == other.plan
        return self.plan is None and other.plan is None and self.plan_name == other.plan_name

    def to_props(self) -> dict[str, str]:
        """The ``painters.*`` string properties (ONNX metadata, a sidecar, GGUF keys) of this record."""
        props = {PLAN: self.plan_name}
        if self.plan is not None:
            props[SCHEDULE] = self.plan.to_json_text()
        if self.slot_layout is not None:
            props[SLOT_LAYOUT] = json.dumps(self.slot_layout.to_json(), separators=(",", ":"))
        for key, value in ((SOURCE_HASH, self.source_hash), (FORM, self.form), (PRECISION, self.precision),
                           (TARGET, self.target), (VERSION, self.version)):
            if value:
                props[key] = value
        props.update({PREFIX + k: v for k, v in self.extra.items()})
        return props

    @staticmethod
    def from_props(props: Mapping[str, str], what: str = "the graph") -> Record:
        """Read a record from string properties (other keys ignored); refuses malformed ``painters.*`` JSON."""
        mine = {k: str(v) for k, v in painters_props(props).items()}
        plan = None
        if SCHEDULE in mine:
            try:
                plan = Plan.from_json(_json(mine, SCHEDULE, what))
            except CompileError:
                raise
            except PaintersError as exc:
                raise CompileError(f"metadata {SCHEDULE} of {what} is malformed: {exc}") from None
        layout = None
        if SLOT_LAYOUT in mine:
            try:
                layout = RecordedLayout.from_json(_json(mine, SLOT_LAYOUT, what))
            except CompileError:
                raise
            except (ValueError, TypeError, KeyError) as exc:
                raise CompileError(f"metadata {SLOT_LAYOUT} of {what} is malformed ({type(exc).__name__}: {exc}); "
                                   "it was edited or written by another tool — recompile it with "
                                   "`painters compile`") from None
        known = {PLAN, SCHEDULE, SLOT_LAYOUT, SOURCE_HASH, FORM, PRECISION, TARGET, VERSION}
        return Record(plan_name=mine.get(PLAN, plan.name if plan is not None else "baseline"), plan=plan,
                      slot_layout=layout, source_hash=mine.get(SOURCE_HASH, ""), form=mine.get(FORM),
                      precision=mine.get(PRECISION), target=mine.get(TARGET), version=mine.get(VERSION),
                      extra={k.removeprefix(PREFIX): v for k, v in mine.items() if k not in known})

    @staticmethod
    def from_json(data: Mapping, what: str) -> Record:
        """Read the conventions' JSON form, a deployed checkpoint's ``config.json["painters"]``.

        That is ``{"plan": Plan.to_json(), "target", "source_hash", "version"}``.
        """
        try:
            plan = Plan.from_json(data["plan"])
        except (KeyError, TypeError, PaintersError) as exc:
            raise CompileError(f"{what}: its painters record has no valid plan ({exc}); redeploy it with "
                               "`painters deploy`") from None
        return Record(plan_name=plan.name, plan=plan, source_hash=str(data.get("source_hash", "")),
                      target=data.get("target"), version=data.get("version"))

    def to_json(self) -> dict:
        """The conventions' JSON form, inverse of :meth:`from_json` (the plan must be known)."""
        if self.plan is None:
            raise CompileError("a deployed checkpoint records its plan; this record has none")
        return {"plan": self.plan.to_json(), "target": self.target, "source_hash": self.source_hash,
                "version": self.version}


def painters_props(props: Mapping[str, str]) -> dict[str, str]:
    """The ``painters.*`` entries of a property map, verbatim (what an engine's sidecar keeps of its graph)."""
    return {k: v for k, v in props.items() if k.startswith(PREFIX)}


def graph_props(path: Path) -> dict[str, str]:
    """An ONNX file's metadata properties, without loading its weights or external data."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def read_graph_record(path: str | Path) -> Record:
    """The record of an ONNX graph file (its ``painters.*`` metadata)."""
    return Record.from_props(graph_props(Path(path)), str(path))


# ---- the kinds --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A model painters loads and runs itself: a built-in name, a checkpoint directory or a ``.gguf``."""

    name: str
    record: Record | None = None
    kind: ClassVar[str] = "source"
    routes_as: ClassVar[str] = "source"  # how the router opens it: "source", "graph" or "engine"

    @property
    def path(self) -> Path:
        """The source as a path (a built-in name is a path that does not exist)."""
        return Path(self.name)


@dataclass(frozen=True)
class Graph:
    """An ONNX graph (exported or compiled), recognised by parsing it as ONNX."""

    path: Path
    record: Record
    kind: ClassVar[str] = "graph"
    routes_as: ClassVar[str] = "graph"

    @classmethod
    def detect(cls, path: Path) -> Graph | None:
        """The Graph at ``path``, or None when its content says it is not one."""
        if not path.is_file():
            return None
        try:
            props = graph_props(path)
        except Exception:  # noqa: BLE001 — not an ONNX protobuf: some other kind
            return None
        return cls(path, Record.from_props(props, str(path)))


@dataclass(frozen=True)
class Engine:
    """A TensorRT engine, recognised by its sidecar (which holds the source graph's metadata)."""

    path: Path
    record: Record
    sidecar: Mapping = field(default_factory=dict, repr=False)
    kind: ClassVar[str] = "engine"
    routes_as: ClassVar[str] = "engine"

    @classmethod
    def detect(cls, path: Path) -> Engine | None:
        """The Engine at ``path``, or None when its content says it is not one."""
        if not (path.is_file() and sidecar_path(path).is_file()):
            return None
        sidecar = read_sidecar(path)
        meta = sidecar.get("inputs", {}).get("metadata", {}) if isinstance(sidecar.get("inputs"), dict) else {}
        return cls(path, Record.from_props(meta if isinstance(meta, dict) else {}, str(path)), sidecar)

    @property
    def onnx(self) -> Path | None:
        """The graph the engine was built from (its tokenizer sits beside it), when the sidecar says."""
        return Path(self.sidecar["onnx"]) if self.sidecar.get("onnx") else None


@dataclass(frozen=True)
class GenaiFolder:
    """An ONNX Runtime GenAI folder (``genai_config.json`` and the graph it names)."""

    path: Path
    graph: Path
    record: Record
    kind: ClassVar[str] = "genai-folder"
    routes_as: ClassVar[str] = "graph"

    @classmethod
    def detect(cls, path: Path) -> GenaiFolder | None:
        """The GenaiFolder at ``path``, or None when its content says it is not one."""
        config = path / "genai_config.json"
        if not (path.is_dir() and config.is_file()):
            return None
        try:
            decoder = json.loads(config.read_text())["model"]["decoder"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CompileError(f"{config} is not an ONNX Runtime GenAI config ({exc}); re-export the folder") from None
        graph = path / decoder.get("filename", "model.onnx")
        return cls(path, graph, read_graph_record(graph) if graph.is_file() else Record())


@dataclass(frozen=True)
class Checkpoint(Source):
    """A Hugging Face checkpoint directory; a deployed one records its provenance in ``config.json["painters"]``."""

    kind: ClassVar[str] = "checkpoint"

    @classmethod
    def detect(cls, path: Path) -> Checkpoint | None:
        """The Checkpoint at ``path``, or None when its content says it is not one."""
        config = path / "config.json"
        if not (path.is_dir() and config.is_file()):
            return None
        try:
            data = json.loads(config.read_text())
        except (OSError, ValueError) as exc:
            raise CompileError(f"{config} is not valid JSON ({exc}); the checkpoint is damaged") from None
        mine = data.get("painters") if isinstance(data, dict) else None
        return cls(str(path), Record.from_json(mine, str(path)) if isinstance(mine, dict) else None)


@dataclass(frozen=True)
class DeployedGguf(Source):
    """A ``.gguf`` file (recognised by its magic bytes); a deployed one records ``painters.*`` GGUF keys."""

    kind: ClassVar[str] = "gguf"

    @classmethod
    def detect(cls, path: Path) -> DeployedGguf | None:
        """The DeployedGguf at ``path``, or None when its content says it is not one."""
        if not path.is_file():
            return None
        with open(path, "rb") as f:
            if f.read(4) != GGUF_MAGIC:
                return None
        from gguf import GGUFReader

        try:
            reader = GGUFReader(path)
        except Exception as exc:  # gguf-py raises ValueError, IndexError, struct errors on damaged files
            raise PaintersError(f"{path} starts like a GGUF file but gguf-py cannot read it ({type(exc).__name__}: "
                                f"{str(exc)[:100]}); the file is truncated or damaged — fetch or deploy it again"
                                ) from None
        props = {name: str(f.contents()) for name, f in reader.fields.items() if name.startswith(PREFIX)}
        if PLAN not in props:  # a plain GGUF runs every block once, in order: baseline, its block count recorded
            arch = reader.fields.get("general.architecture")
            blocks = reader.fields.get(f"{arch.contents()}.block_count") if arch is not None else None
            if blocks is not None:
                props[f"{PREFIX}blocks"] = str(blocks.contents())
            return cls(str(path), Record.from_props(props, str(path)))
        if PLAN in props and SCHEDULE not in props:  # the conventions: painters.plan holds the Plan's JSON text
            try:
                plan = Plan.from_json(json.loads(props[PLAN]))
            except (ValueError, PaintersError) as exc:
                raise CompileError(f"{path}: GGUF key {PLAN} is not a plan's JSON ({exc}); redeploy it") from None
            props = {**props, PLAN: plan.name, SCHEDULE: props[PLAN]}
        return cls(str(path), Record.from_props(props, str(path)))


Artifact = Source | Graph | Engine | GenaiFolder | Checkpoint | DeployedGguf

# Content tests, cheapest and most specific first; a path none of them claims is a source name.
DETECTORS: tuple = (DeployedGguf, Engine, GenaiFolder, Checkpoint, Graph)


def read_artifact(model: str | Path) -> Artifact:
    """What MODEL is (see the module docstring); a path that exists but no detector claims is refused."""
    path = Path(model)
    if path.exists():
        for kind in DETECTORS:
            found = kind.detect(path)
            if found is not None:
                return found
        if path.is_file():
            raise PaintersError(f"{path} is not an ONNX graph, a TensorRT engine with its sidecar "
                                f"({path.name}.json) or a GGUF file; pass one of those or a source name")
    return Source(str(model))


def missing_artifact(model: str | Path) -> str | None:
    """What a path that does not exist was meant to be, for the error's wording only ("engine", "model").

    None for a source name or a path that exists (its content decides, :func:`read_artifact`).
    """
    path = Path(model)
    if path.exists():
        return None
    return {".onnx": "model", ".engine": "engine"}.get(path.suffix)
