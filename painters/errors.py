"""The one exception family users see; anything else escaping is a bug."""

__all__ = ["PaintersError", "PlanError", "ExportError", "CompileError", "BuildError", "BenchError"]


class PaintersError(Exception):
    """Bad input or environment: the message names the problem and the fix."""


class PlanError(PaintersError, ValueError):
    """A plan name, plan file or scores file that does not describe a valid schedule."""


class ExportError(PaintersError):
    """A model source that cannot be loaded or exported."""


class CompileError(PaintersError):
    """A graph that cannot be rewritten (blocks not found, bad paths, unsafe external data)."""


class BuildError(PaintersError):
    """An engine that cannot be built or loaded (missing TensorRT, bad profile, foreign engine)."""


class BenchError(PaintersError):
    """A benchmark that cannot run (missing data, incompatible results)."""
