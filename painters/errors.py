"""The one exception family users see; anything else escaping is a bug."""

__all__ = ["PaintersError", "PlanError", "ExportError", "CompileError", "BuildError", "BenchError", "InternalError"]


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


class InternalError(Exception):
    """A broken invariant inside painters: a bug, not the user's input.

    Deliberately *not* a :class:`PaintersError`, so the CLI lets it through with its traceback instead of
    printing one line.
    """
