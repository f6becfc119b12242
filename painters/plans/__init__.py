"""The plan language: pure data, no torch/onnx imports, consumed by every backend."""

from painters.plans.grammar import (
    GRAMMAR,
    load_plan_file,
    painters_reference_plan,
    parse_plan,
    split_plans,
    symmetric_plan,
)
from painters.plans.schedule import KVMode, Plan, Stage, Step
from painters.plans.scores import Scores, least_important, load_scores

__all__ = ["GRAMMAR", "KVMode", "Plan", "Scores", "Stage", "Step", "least_important", "load_plan_file",
           "load_scores", "painters_reference_plan", "parse_plan", "split_plans",
           "symmetric_plan"]
