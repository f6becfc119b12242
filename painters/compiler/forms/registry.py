"""The registered block forms, in the order discovery tries them.

Adding a form is one line here, or a :func:`register` call from outside the package (as a test's toy form does).
"""

from __future__ import annotations

from painters.compiler.forms.base import BlockForm
from painters.compiler.forms.gqa import GQA_FORM
from painters.compiler.forms.llama import LLAMA

__all__ = ["FORMS", "register", "unregister"]

FORMS: list[BlockForm] = [LLAMA, GQA_FORM]


def register(form: BlockForm) -> None:
    """Add ``form`` after the built-in ones (discovery tries forms in order; the first match wins)."""
    if form not in FORMS:
        FORMS.append(form)


def unregister(form: BlockForm) -> None:
    """Remove a form added by :func:`register`."""
    FORMS.remove(form)
