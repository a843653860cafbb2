"""User-facing errors: one line, no traceback, with the nearest valid name when there is one."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in what the user asked for (bad name, missing file, bad value).

    The CLI prints it as a single ``error: ...`` line and exits with status 2.
    """


def nearest(name: str, choices: Iterable[str]) -> str | None:
    """Closest match of ``name`` among ``choices`` (case-insensitive), or None."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[hits[0]] if hits else None


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> UserError:
    """An error for an unknown ``kind`` called ``name``, suggesting the nearest choice."""
    choices = sorted(choices)
    hint = nearest(name, choices)
    suggestion = f"; did you mean '{hint}'?" if hint else ""
    listing = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
    return UserError(f"unknown {kind} '{name}'{suggestion} (valid: {listing})")
