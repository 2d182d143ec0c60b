"""What every page test checks after a run: no exception, no error box; and the texts of shown elements."""

from __future__ import annotations


def page_ok(at):
    """The AppTest after a run, asserting it raised nothing and showed no error."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def texts(elements) -> str:
    """The shown elements' values joined with " | " (for assertions on what a page says)."""
    return " | ".join(str(e.value) for e in elements)
