"""Issue 32, classes 2 and 6: plan names come from schedules, never from a file's say-so, and compiled-plan caches are
keyed by the resolved schedule — an edited plan file recompiles, ``q/r.yaml`` and ``q-r.yaml`` never share."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.reliability.checks import assert_refused, run_cli

# (claimed name, steps that are NOT that plan's for 8 layers)
CLAIMS = [
    ("skip_1_3", [0, 0, 0, 0]),
    ("skip_1_3", [0, 1, 2, 3, 4, 5, 6, 7]),
    ("baseline", [0, 1, 2, 3, 4, 5, 6]),
    ("drop_attn_2", [0, 1, 2, 3, 4, 5, 6, 7]),
    ("repeat_2_4", [0, 1, 2, 3, 3, 4, 5, 6, 7]),
    ("parallel_2_6", [0, 1, {"parallel": [2, 3]}, 4, 5, 6, 7]),
    ("reverse_2_5", [0, 1, 2, 3, 4, 5, 6, 7]),
    ("skip_1_3+drop_mlp_5", [0, 3, 4, 5, 6, 7]),
]


def _plan_file(folder: Path, stem: str, steps: list, *, declared: str | None, suffix: str) -> Path:
    data: dict = {"steps": steps}
    if declared is not None:
        data["name"] = declared
    path = folder / f"{stem}{suffix}"
    path.write_text(json.dumps(data) if suffix == ".json" else f"{'name: ' + declared if declared else ''}\n"
                    f"steps: {json.dumps(steps)}\n")
    return path


@pytest.mark.parametrize(("name", "steps"), CLAIMS)
@pytest.mark.parametrize("how", ["name_key", "file_stem"])
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_plan_file_cannot_claim_another_schedule(tmp_path, name, steps, how, suffix):
    path = _plan_file(tmp_path, name if how == "file_stem" else "mine", steps,
                      declared=name if how == "name_key" else None, suffix=suffix)
    assert_refused(["plans", "show", path, "--layers", "8"], [tmp_path], str(path), repr(name))


@pytest.mark.parametrize("how", ["name_key", "file_stem"])
def test_compile_never_overwrites_the_real_graph_of_the_claimed_name(model_dir, how):
    """`name: skip_1_3` with steps [0, 0, 0, 0] overwrote model.skip_1_3.onnx and recorded skip_1_3."""
    code, out = run_cli(["compile", "--plan", "skip_1_3", model_dir])
    assert code == 0, out
    real = model_dir.with_name("model.skip_1_3.onnx")
    assert real.is_file()
    folder = model_dir.parent / "plans"
    folder.mkdir()
    path = _plan_file(folder, "skip_1_3" if how == "file_stem" else "fake", [0, 0, 0, 0],
                      declared="skip_1_3" if how == "name_key" else None, suffix=".yaml")
    assert_refused(["compile", "--plan", path, model_dir], [model_dir.parent], "skip_1_3")


@pytest.mark.parametrize(("stem", "steps"), [("skip_1_3", [0, 3, 4, 5, 6, 7]), ("baseline", list(range(8))),
                                             ("my_plan", [0, 0, 0, 0]), ("x.y", [1, 2])])
def test_a_plan_file_whose_name_is_its_schedule_or_free_form_is_accepted(tmp_path, stem, steps):
    path = _plan_file(tmp_path, stem, steps, declared=None, suffix=".yaml")
    code, out = run_cli(["plans", "show", path, "--layers", "8"])
    assert code == 0, out
    assert f"plan {stem} " in out


# caches keyed by schedule --------------------------------------------------------------------------------------

@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PAINTERS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _schedule(path: Path) -> list:
    from painters.compiler.compile import describe

    return describe(path)["schedule"]


@pytest.mark.parametrize("edit", [[0, 1, 2, 3], [7, 6, 5, 4, 3, 2, 1, 0], [0, {"parallel": [1, 2]}, 3]])
def test_an_edited_plan_file_recompiles(model_dir, tmp_path, cache, edit):
    from painters.compiler.variants import compiled_variants

    plan = tmp_path / "p.yaml"
    plan.write_text("steps: [0, 1, 2, 3, 4, 5, 6, 7, 7, 7]\n")
    first = compiled_variants(model_dir, [str(plan)])[str(plan)]
    plan.write_text(f"steps: {json.dumps(edit)}\n")
    second = compiled_variants(model_dir, [str(plan)])[str(plan)]
    assert first != second and first.is_file() and second.is_file()
    assert len(_schedule(second)) == len(edit) and len(_schedule(first)) == 10


@pytest.mark.parametrize(("a", "b"), [("q/r.yaml", "q-r.yaml"), ("q/r.json", "q-r.json"), ("a/b/c.yaml", "a-b-c.yaml")])
def test_plan_files_with_one_safe_name_never_share_a_graph(model_dir, tmp_path, cache, a, b):
    from painters.compiler.variants import compiled_variants

    pa, pb = tmp_path / a, tmp_path / b
    pa.parent.mkdir(parents=True, exist_ok=True)
    pa.write_text('{"steps": [0, 1, 2]}\n')  # JSON is YAML too
    pb.write_text('{"steps": [5, 6, 7, 7]}\n')
    paths = compiled_variants(model_dir, [str(pa), str(pb)])
    assert paths[str(pa)] != paths[str(pb)]
    assert len(_schedule(paths[str(pa)])) == 3 and len(_schedule(paths[str(pb)])) == 4


def test_latency_times_the_edited_plan(model_dir, tmp_path, cache):
    """The reported ideal ratio follows the file's current steps, not a graph compiled from its old ones."""
    plan = tmp_path / "p.yaml"
    out = tmp_path / "lat.json"

    def ideal(steps: list) -> float:
        plan.write_text(f"steps: {json.dumps(steps)}\n")
        code, text = run_cli(["bench", "latency", model_dir, "--plans", f"baseline,{plan}", "--prompt", "4",
                              "--gen", "1", "--warmup", "0", "--iters", "1", "--json", out])
        assert code == 0, text
        rows = json.loads(out.read_text())["rows"]
        return next(r["ideal_ratio"] for r in rows if r["plan"] != "baseline")

    assert ideal([0, 1, 2, 3, 4]) == pytest.approx(5 / 8)
    assert ideal(list(range(8)) * 2) == pytest.approx(2.0)


def test_a_scripts_graph_folder_follows_the_compiler_code_and_the_choices(tmp_path, monkeypatch):
    """The int4 benchmarks cache graphs under ``code_keyed``: an edited pass or another --gguf is a new folder."""
    from painters.compiler.variants import code_keyed

    before = code_keyed(tmp_path, "smollm2-135m", "None")
    assert before == code_keyed(tmp_path, "smollm2-135m", "None") and before.parent == tmp_path
    assert code_keyed(tmp_path, "smollm2-135m", "none") != before
    read = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes",
                        lambda self: read(self) + (b"#" if self.name == "gguf_weights.py" else b""))
    assert code_keyed(tmp_path, "smollm2-135m", "None") != before
