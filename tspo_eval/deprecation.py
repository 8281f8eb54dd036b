"""The one-line note an old spelling prints while it still works (docs/renames.md lists them)."""
from __future__ import annotations

import sys


def deprecation_note(old: str, new: str, where: str = "") -> None:
    """One line on stderr: the old spelling still works, for now; the new one is what to write."""
    print(f"note: {where + ': ' if where else ''}{old} is deprecated, write {new} "
          "(the old spelling goes in the next release)", file=sys.stderr)
