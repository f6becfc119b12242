"""`painters plans list|show`: the plan grammar and what a plan does, before anything is compiled.

Thin on purpose: parsing, validation and every count come from :mod:`painters.plans`, so what this prints is
what the compiler and the runtimes will execute.
"""

from __future__ import annotations

import dataclasses
import json

import click

from painters.cli.root import handle_errors, main
from painters.plans import GRAMMAR, Plan, Step, load_scores, parse_plan

__all__ = ["plans_group"]


@main.group("plans")
def plans_group() -> None:
    """List the plan grammar and show the schedule a plan name or plan file compiles to."""


@plans_group.command("list")
def list_cmd() -> None:
    """Print every plan form with one example (the GRAMMAR table that the parser accepts)."""
    width = max(len(form) for form in GRAMMAR)
    example_width = max(len(example) for example, _ in GRAMMAR.values())
    for form, (example, meaning) in GRAMMAR.items():
        click.echo(f"{form:<{width}}  {example:<{example_width}}  {meaning}")


@plans_group.command("show")
@click.argument("plan")
@click.option("--layers", "num_layers", type=int, required=True, help="Decoder blocks in the model (L).")
@click.option("--scores", type=click.Path(dir_okay=False), default=None, help="Importance scores for drop_*_kN plans.")
@click.option("--json", "as_json", is_flag=True, help="Print Plan.to_json() instead of text.")
@handle_errors
def show_cmd(plan: str, num_layers: int, scores: str | None, as_json: bool) -> None:
    """Print PLAN's execution schedule, evaluation counts, KV slots and ideal cost ratio for a model of L blocks."""
    p = parse_plan(plan, num_layers, scores=load_scores(scores) if scores else None)
    if as_json:
        click.echo(json.dumps(p.to_json()))
        return
    click.echo(f"plan {p} ({p.num_layers} layers, kv={p.kv}): {len(p.steps)} steps")
    for step in p.steps:
        click.echo(f"  {_describe(step)}")
    click.echo(f"block evaluations: {p.block_evals} (attention {p.attn_evals}, MLP {p.mlp_evals})")
    click.echo(f"KV slots: {p.kv_slots}")
    click.echo(f"ideal cost ratio vs baseline: {p.ideal_cost_ratio():.3f} of sublayer evaluations, "
               f"depth {p.depth}/{p.num_layers} = {p.depth / p.num_layers:.3f}")
    if p.kv == "mean":
        exact = _exact_slots(p)
        click.echo(f"kv=mean saves {exact - p.kv_slots} KV slots vs kv=exact ({p.kv_slots} instead of {exact})")


def _describe(step: Step) -> str:
    """One schedule line: a block, or a parallel group (contiguous members shown as a range, for 24-block groups)."""
    b = step.blocks
    contiguous = len(b) > 2 and list(b) == list(range(b[0], b[-1] + 1))
    text = f"parallel [{b[0]}-{b[-1]}]" if contiguous else (
        f"parallel {list(b)}" if step.parallel else f"block {b[0]}")
    if step.loops > 1:
        text += f" x{step.loops}"
    dropped = [name for name, kept in (("attention", step.attn), ("MLP", step.mlp)) if not kept]
    return text + (f" ({', '.join(dropped)} dropped)" if dropped else "")


def _exact_slots(plan: Plan) -> int:
    """KV slots of the same schedule under kv=exact: the baseline of the kv=mean saving."""
    return dataclasses.replace(plan, kv="exact").kv_slots
