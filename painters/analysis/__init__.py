"""Model analyses behind plans: module importance (What Matters in Transformers) and layer similarity (Painters)."""

from painters.analysis.calibration import CalibrationError, calibration_documents, calibration_ids
from painters.analysis.importance import (
    Drop,
    ImportanceResult,
    drop_plan,
    importance_scores,
    iterative_drop_order,
    measure_importance,
)
from painters.analysis.similarity import (
    Similarity,
    hidden_similarity,
    measure_similarity,
    plot_scores,
    plot_similarity,
)

__all__ = ["CalibrationError", "Drop", "ImportanceResult", "Similarity", "calibration_documents", "calibration_ids",
           "drop_plan", "hidden_similarity", "importance_scores", "iterative_drop_order", "measure_importance",
           "measure_similarity", "plot_scores", "plot_similarity"]
