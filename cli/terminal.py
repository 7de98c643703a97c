"""What the CLI prints, fitted to where it goes: a terminal gets colour and its own width; a pipe
or a file gets plain text, never cut or wrapped mid-phrase (a table cell is written whole, a
line as long as it is), so that ``ddmc … | cat`` and a log file keep every word.

Colour (``--color auto|always|never``): ``auto`` colours only a terminal and honours
``NO_COLOR`` (https://no-color.org) and ``TERM=dumb``.

>>> paint("a.ddm:1:5: error: bad\\n  1 | x\\n        ^\\n  hint: fix it", on=False)
'a.ddm:1:5: error: bad\\n  1 | x\\n        ^\\n  hint: fix it'
>>> "\\x1b[1;31merror:\\x1b[0m" in paint("a.ddm:1:5: error: bad", on=True)
True
"""

from __future__ import annotations

import os
import re
import sys

__all__ = ["console", "colour_wanted", "paint", "PIPE_WIDTH"]

PIPE_WIDTH = 10_000  # columns for output that is not a terminal: nothing is cut or wrapped

_mode = "auto"


def set_mode(mode: str) -> None:
    global _mode
    _mode = mode


def colour_wanted(stream=None) -> bool:
    stream = stream if stream is not None else sys.stderr
    if _mode == "always":
        return True
    if _mode == "never" or os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def console(stderr: bool = False):
    """A rich Console for stdout (or stderr): on a terminal its width and colour; elsewhere
    plain text at :data:`PIPE_WIDTH` columns with soft wrapping (no cut cells, no breaks)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    colour = colour_wanted(stream)
    if getattr(stream, "isatty", lambda: False)():
        return Console(stderr=stderr, no_color=not colour)
    return Console(
        stderr=stderr,
        width=PIPE_WIDTH,
        soft_wrap=True,
        force_terminal=True if _mode == "always" else None,
        no_color=not colour,
    )


_BOLD_RED, _BOLD_MAGENTA, _BOLD_CYAN, _GREEN, _CYAN, _RESET = (
    "\x1b[1;31m",
    "\x1b[1;35m",
    "\x1b[1;36m",
    "\x1b[1;32m",
    "\x1b[36m",
    "\x1b[0m",
)
_SEVERITY = re.compile(r"^((?:[^\s:][^:]*:\d+:\d+: )?)(error:|warning:|note:)", re.M)
_CARET = re.compile(r"^(\s*)([\^~]+)\s*$", re.M)
_HINT = re.compile(r"^(  hint:)", re.M)


def paint(text: str, on: bool | None = None) -> str:
    """A diagnostic with its severity, caret and hint coloured (when ``on``; by default when
    stderr wants colour)."""
    if not (colour_wanted() if on is None else on):
        return text
    colours = {"error:": _BOLD_RED, "warning:": _BOLD_MAGENTA, "note:": _BOLD_CYAN}
    text = _SEVERITY.sub(lambda m: f"{m.group(1)}{colours[m.group(2)]}{m.group(2)}{_RESET}", text)
    text = _CARET.sub(lambda m: f"{m.group(1)}{_GREEN}{m.group(2)}{_RESET}", text)
    return _HINT.sub(lambda m: f"{_CYAN}{m.group(1)}{_RESET}", text)
