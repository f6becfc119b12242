"""Plan names (``parallel_4_28+drop_attn_24-27:kvmean``) and plan files (YAML/JSON) → :class:`Plan`.

Every named part rewrites the baseline order of a set of blocks; parts of a composed plan must touch
disjoint blocks, so they can be applied independently. The file form lists steps directly.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path

from painters.errors import PlanError
from painters.plans.schedule import MAX_LOOPS, MAX_STEPS, Plan, Step, check_layers
from painters.plans.scores import Scores, least_important

__all__ = ["parse_plan", "load_plan_file", "GRAMMAR", "painters_reference_plan", "symmetric_plan", "split_plans"]

# name pattern → (example, meaning); `plans list` prints this table.
GRAMMAR: dict[str, tuple[str, str]] = {
    "baseline": ("baseline", "every block once, in order"),
    "skip_A_B": ("skip_15_18", "blocks A..B-1 are not run"),
    "repeat_A_B": ("repeat_4_28", "every slot A..B-1 runs block (A+B)//2"),
    "reverse_A_B": ("reverse_11_19", "blocks A..B-1 in reverse order"),
    "shuffle_A_B_sS": ("shuffle_4_28_s0", "blocks A..B-1 in random.seed(S); random.shuffle order"),
    "parallel_A_B": ("parallel_4_28", "blocks A..B-1 read the same input; outputs averaged"),
    "parallel_A_B_xR": ("parallel_4_29_x3", "looped parallel: the group runs R times, fed its own average"),
    "dup_I_xK": ("dup_12_x2", "block I runs K times in a row"),
    "swap_I_J": ("swap_10_20", "blocks I and J trade places"),
    "drop_attn_LIST": ("drop_attn_4,9-12", "remove the attention sublayer (and its norm) of the listed blocks"),
    "drop_mlp_LIST": ("drop_mlp_20-23", "remove the MLP sublayer (and its norm) of the listed blocks"),
    "drop_block_LIST": ("drop_block_3,7", "remove the listed blocks"),
    "drop_KIND_kN": ("drop_attn_k8", "drop the N least important modules (KIND: attn, mlp, block, joint) by --scores"),
    "PLAN+PLAN": ("parallel_8_20+drop_attn_24-27", "compose parts that touch disjoint blocks"),
    "PLAN:kvmean": ("parallel_4_28:kvmean", "parallel groups share one averaged KV slot per iteration"),
}

_INT = r"(0|[1-9]\d*)"
_LIST = r"(\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*)"
_PATTERNS: list[tuple[str, re.Pattern]] = [
    # re.ASCII: `\d` must not accept other scripts' digits (int() would silently read "١" as 1).
    (kind, re.compile(pattern + r"\Z", re.ASCII)) for kind, pattern in [
        ("baseline", r"baseline"),
        ("skip", rf"skip_{_INT}_{_INT}"),
        ("repeat", rf"repeat_{_INT}_{_INT}"),
        ("reverse", rf"reverse_{_INT}_{_INT}"),
        ("shuffle", rf"shuffle_{_INT}_{_INT}_s{_INT}"),
        ("parallel", rf"parallel_{_INT}_{_INT}(?:_x{_INT})?"),
        ("dup", rf"dup_{_INT}_x{_INT}"),
        ("swap", rf"swap_{_INT}_{_INT}"),
        ("drop_k", r"drop_(attn|mlp|block|joint)_k" + _INT),
        ("drop", r"drop_(attn|mlp|block)_" + _LIST),
    ]
]

# A part maps original block index → the steps that replace it (blocks absent from the map stay as they are).
Replacement = dict[int, list[Step]]


def parse_plan(text: str, num_layers: int, *, scores: Scores | None = None) -> Plan:
    """Parse a plan name (or the path of a plan file) for a model with ``num_layers`` blocks."""
    text = str(text).strip()
    if text.endswith((".yaml", ".yml", ".json")):
        return load_plan_file(text, num_layers)
    check_layers(num_layers)
    body, kv = text, "exact"
    if ":" in text:
        body, _, suffix = text.partition(":")
        if suffix not in ("kvmean", "kvexact"):
            raise PlanError(f"unknown plan suffix {':' + suffix!r} in {text!r}; valid: ':kvmean' or ':kvexact'")
        kv = "mean" if suffix == "kvmean" else "exact"
    replacement: Replacement = {}
    owner: dict[int, str] = {}
    parts = body.split("+")
    for part in parts:
        for block, steps in _parse_part(part, num_layers, scores).items():
            if block in owner:
                raise PlanError(f"plan parts {owner[block]!r} and {part!r} both touch block {block}; "
                                "composed parts (joined with '+') must touch disjoint blocks")
            owner[block] = part
            replacement[block] = steps
    steps = [s for i in range(num_layers) for s in replacement.get(i, [Step((i,))])]
    name = "+".join(parts) + (":kvmean" if kv == "mean" else "")
    return Plan(name, tuple(steps), num_layers, kv).validate()


def _parse_part(part: str, L: int, scores: Scores | None) -> Replacement:
    for kind, pattern in _PATTERNS:
        match = pattern.match(part)
        if match:
            try:
                return _BUILDERS[kind](part, L, scores, *match.groups())
            except PlanError:
                raise
            except ValueError as exc:  # int() refuses numbers past sys.get_int_max_str_digits()
                raise PlanError(f"{part!r}: malformed number ({exc}); indices and counts are small integers") from None
    raise PlanError(f"unknown plan {part!r}; valid forms: {', '.join(GRAMMAR)} (see `painters plans list`)")


def _range(part: str, a: str, b: str, L: int) -> list[int]:
    A, B = int(a), int(b)
    if A >= B:
        raise PlanError(f"{part!r}: empty range [{A}, {B}); ranges are half-open [A, B) with A < B")
    if B > L:
        raise PlanError(f"{part!r}: range [{A}, {B}) exceeds the model's {L} blocks (valid 0–{L - 1}, so B ≤ {L})")
    return list(range(A, B))


def _index(part: str, i: str, L: int) -> int:
    if int(i) >= L:
        raise PlanError(f"{part!r}: block {i} does not exist; model has {L} blocks (valid 0–{L - 1})")
    return int(i)


def _reorder(order: Callable[[list[int]], list[int]]):
    def build(part, L, scores, a, b, *rest):
        blocks = _range(part, a, b, L)
        new = order(blocks, *rest)
        return {blk: [Step((new[k],))] for k, blk in enumerate(blocks)}
    return build


def _shuffled(blocks: list[int], seed: str) -> list[int]:
    order = list(blocks)
    # The Painters reference code's "random" variant, made reproducible: Random(S).shuffle is the same order as
    # random.seed(S); random.shuffle, without reseeding the caller's global generator.
    random.Random(int(seed)).shuffle(order)
    return order


def _skip(part, L, scores, a, b):
    return {blk: [] for blk in _range(part, a, b, L)}


def _parallel(part, L, scores, a, b, loops):
    blocks = _range(part, a, b, L)
    R = int(loops) if loops is not None else 1
    if not 1 <= R <= MAX_LOOPS:
        raise PlanError(f"{part!r}: loop count must be 1..{MAX_LOOPS} (parallel_A_B_xR with 1 ≤ R ≤ {MAX_LOOPS})")
    return {blk: [Step(tuple(blocks), parallel=True, loops=R)] if k == 0 else [] for k, blk in enumerate(blocks)}


def _dup(part, L, scores, i, k):
    if not 1 <= int(k) <= MAX_LOOPS:  # checked before building K steps: dup_0_x99999999999 must not eat memory
        raise PlanError(f"{part!r}: repeat count must be 1..{MAX_LOOPS} (dup_I_xK with 1 ≤ K ≤ {MAX_LOOPS})")
    block = _index(part, i, L)
    return {block: [Step((block,))] * int(k)}


def _swap(part, L, scores, i, j):
    I, J = _index(part, i, L), _index(part, j, L)
    if I == J:
        raise PlanError(f"{part!r}: a block cannot swap with itself; use swap_I_J with I ≠ J")
    return {I: [Step((J,))], J: [Step((I,))]}


def _drop_steps(kind: str, block: int) -> list[Step]:
    return {"attn": [Step((block,), attn=False)], "mlp": [Step((block,), mlp=False)], "block": []}[kind]


def _drop(part, L, scores, kind, listing):
    blocks: list[int] = []
    for item in listing.split(","):
        lo, _, hi = item.partition("-")
        if hi:
            _index(part, hi, L)  # before the range is listed: drop_attn_0-999999999 must not build a huge list
            if int(lo) > int(hi):
                raise PlanError(f"{part!r}: range {item!r} runs backwards; write LO-HI with LO ≤ HI (inclusive)")
            blocks += [_index(part, str(b), L) for b in range(int(lo), int(hi) + 1)]
        else:
            blocks.append(_index(part, lo, L))
    if len(set(blocks)) != len(blocks):
        raise PlanError(f"{part!r} lists a block twice")
    return {b: _drop_steps(kind, b) for b in blocks}


def _drop_k(part, L, scores, kind, n):
    if scores is None:
        raise PlanError(f"{part!r} ranks modules by importance and needs a scores file: "
                        "run `painters importance SRC --json scores.json` and pass --scores scores.json")
    if scores.num_layers != L:
        raise PlanError(f"{part!r}: the scores file covers {scores.num_layers} layers, the model has {L}")
    chosen = least_important(scores, kind, int(n))
    dropped: dict[int, set[str]] = {}
    for k, layer in chosen:
        dropped.setdefault(layer, set()).add(k)
    out: Replacement = {}
    for layer, kinds in dropped.items():
        if kinds == {"attn", "mlp"} or "block" in kinds:
            out[layer] = []
        else:
            out[layer] = _drop_steps(kinds.pop(), layer)
    return out


_BUILDERS = {
    "baseline": lambda part, L, scores: {},
    "skip": _skip,
    "repeat": _reorder(lambda blocks: [(blocks[0] + blocks[-1] + 1) // 2] * len(blocks)),
    "reverse": _reorder(lambda blocks: blocks[::-1]),
    "shuffle": _reorder(_shuffled),
    "parallel": _parallel,
    "dup": _dup,
    "swap": _swap,
    "drop_k": _drop_k,
    "drop": _drop,
}

_STEP_KEYS = {"block", "attn", "mlp"}
MAX_PLAN_FILE_BYTES = 1 << 20
_GROUP_KEYS = {"parallel", "loops", "attn", "mlp"}


def load_plan_file(path: str | Path, num_layers: int) -> Plan:
    """Read a plan file: ``{name?, kv?, steps: [3, {block: 4, attn: false}, {parallel: [5, 6], loops: 2}]}``."""
    path = Path(path)
    check_layers(num_layers)
    try:
        if not path.is_file():  # a FIFO would block and /dev/zero never ends
            raise PlanError(f"plan file {path} is not a regular file; give a .yaml or .json plan file")
        with open(path, "rb") as f:
            raw = f.read(MAX_PLAN_FILE_BYTES + 1)
        if len(raw) > MAX_PLAN_FILE_BYTES:
            raise PlanError(f"plan file {path} is over {MAX_PLAN_FILE_BYTES} bytes; a plan file lists at most "
                            f"{MAX_STEPS} steps")
        text = raw.decode("utf-8")
    except (OSError, ValueError) as exc:  # ValueError: a path with a NUL byte, or bytes that are not UTF-8
        raise PlanError(f"plan file {path} cannot be read ({getattr(exc, 'strerror', None) or exc})") from exc
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        raise PlanError(f"plan file {path} is not valid {path.suffix[1:].upper()}: {exc}") from exc
    if isinstance(data, list):
        data = {"steps": data}
    if not isinstance(data, dict) or "steps" not in data:
        raise PlanError(f"plan file {path}: expected a mapping with a 'steps' list (or a bare list of steps)")
    unknown = set(data) - {"name", "kv", "steps"}
    if unknown:
        raise PlanError(f"plan file {path}: unknown keys {sorted(unknown, key=str)}; valid: name, kv, steps")
    kv = data.get("kv", "exact")
    if kv not in ("exact", "mean"):
        raise PlanError(f"plan file {path}: kv must be 'exact' or 'mean', got {kv!r}")
    raw_steps = data["steps"] or []
    if not isinstance(raw_steps, list):
        raise PlanError(f"plan file {path}: 'steps' must be a list, got {raw_steps!r}; "
                        "e.g. steps: [0, {block: 1, attn: false}, {parallel: [2, 3], loops: 2}]")
    if len(raw_steps) > MAX_STEPS:
        raise PlanError(f"plan file {path} has {len(raw_steps)} steps; at most {MAX_STEPS}")
    name = data.get("name")
    name = path.stem if name is None else name
    if not isinstance(name, str) or not name.strip():
        raise PlanError(f"plan file {path}: name must be a non-empty string, got {name!r}")
    if not _FILE_NAME.match(name):
        raise PlanError(f"plan file {path}: name {name[:40]!r} may use only letters, digits and _.,+:=- "
                        "(it becomes part of output file names)")
    steps = tuple(_file_step(path, raw) for raw in raw_steps)
    plan = Plan(name, steps, num_layers, kv).validate()
    _check_file_name(path, plan, "name" in data)
    return plan


def _check_file_name(path: Path, plan: Plan, declared: bool) -> None:
    """Refuse a plan file whose name is a plan name of the grammar with another schedule.

    Why: the name becomes the output file (``M.skip_1_3.onnx``) and the recorded plan; a file named
    ``skip_1_3`` holding other steps overwrote the real skip_1_3 graph and recorded a schedule it did not run.
    """
    if plan.name.endswith((".yaml", ".yml", ".json")):
        return  # not a grammar name (and parsing it would read another file)
    try:
        claimed = parse_plan(plan.name, plan.num_layers)
    except PlanError:
        return  # a free-form name (or one that needs scores): it names nothing else
    if claimed != plan:
        where = "its name:" if declared else "its file name"
        raise PlanError(f"plan file {path}: {where} {plan.name!r} is a plan name whose schedule differs from the "
                        "file's steps; give the file another name (e.g. my_plan) so outputs and metadata do not "
                        f"claim {plan.name}")


def _file_step(path: Path, raw) -> Step:
    if isinstance(raw, bool) or not isinstance(raw, (int, dict)):
        raise PlanError(f"plan file {path}: step {raw!r} must be a block index or a mapping")
    if isinstance(raw, int):
        return Step((raw,))
    keys = _GROUP_KEYS if "parallel" in raw else _STEP_KEYS
    unknown = set(raw) - keys
    if unknown:
        raise PlanError(f"plan file {path}: step {raw!r} has unknown keys {sorted(unknown, key=str)}; "
                        "valid: {block, attn, mlp} or {parallel: [..], loops, attn, mlp}")
    flags = {k: raw[k] for k in ("attn", "mlp") if k in raw}
    if any(not isinstance(v, bool) for v in flags.values()):
        raise PlanError(f"plan file {path}: step {raw!r}: attn/mlp must be true or false")
    if "parallel" in raw:
        members, loops = raw["parallel"], raw.get("loops", 1)
        if not isinstance(members, list) or not all(isinstance(m, int) and not isinstance(m, bool) for m in members):
            raise PlanError(f"plan file {path}: step {raw!r}: parallel must be a list of block indices")
        if not isinstance(loops, int) or isinstance(loops, bool):
            raise PlanError(f"plan file {path}: step {raw!r}: loops must be an integer ≥ 1")
        return Step(tuple(members), parallel=True, loops=loops, **flags)
    if "block" not in raw or not isinstance(raw["block"], int) or isinstance(raw["block"], bool):
        raise PlanError(f"plan file {path}: step {raw!r} needs an integer 'block'")
    return Step((raw["block"],), **flags)


_FILE_NAME = re.compile(r"[A-Za-z0-9_.,+:=-]+\Z", re.ASCII)
_LIST_ITEM = re.compile(r"\d+(?:-\d+)?\Z", re.ASCII)


def split_plans(text: str) -> list[str]:
    """Split a comma-separated list of plan names, keeping the commas of ``drop_*_LIST`` index lists.

    ``baseline,drop_attn_4,9-12,skip_1_3`` → ``["baseline", "drop_attn_4,9-12", "skip_1_3"]``: an item that is
    only an index or a range continues the plan before it.
    """
    names: list[str] = []
    for item in (part.strip() for part in str(text).split(",")):
        if not item:
            continue
        if names and _LIST_ITEM.match(item):
            names[-1] += "," + item
        else:
            names.append(item)
    return names


def symmetric_plan(variant: str, n: int, num_layers: int) -> str:
    """Name of the Painters-grid plan modifying ``n`` middle layers (as the paper's sweeps do)."""
    a = (num_layers - n) // 2
    b = a + n
    if variant.startswith("parallel_x"):
        return f"parallel_{a}_{b}_x{variant.removeprefix('parallel_x')}"
    if variant == "drop_attn":
        return f"drop_attn_{a}-{b - 1}"
    if variant == "shuffle":
        return f"shuffle_{a}_{b}_s0"
    return f"{variant}_{a}_{b}"


# The Painters reference code: `method` and `start_layer N` modify layers N+1 … L−N−1 (inclusive).
_REFERENCE_METHODS = {"skip": "skip", "middle_repeat": "repeat", "reverse": "reverse",
                      "random": "shuffle", "parallel": "parallel", "loop_parallel": "parallel"}


def painters_reference_plan(method: str, start_layer: int, num_layers: int, *, repeat: int = 1, seed: int = 0) -> str:
    """Translate the Painters reference code's (method, start_layer N) to a plan name: range [N+1, L−N)."""
    if method not in _REFERENCE_METHODS:
        raise PlanError(f"unknown Painters method {method!r}; known: {', '.join(_REFERENCE_METHODS)}")
    a, b = start_layer + 1, num_layers - start_layer
    kind = _REFERENCE_METHODS[method]
    if kind == "shuffle":
        return f"shuffle_{a}_{b}_s{seed}"
    if method == "loop_parallel":
        return f"parallel_{a}_{b}_x{repeat}"
    return f"{kind}_{a}_{b}"
