"""What the ``ftlab`` subcommands share: their error, and plain-text tables and sizes."""
from __future__ import annotations

from typing import Any, Sequence

from ftlab.errors import FtlabError
from ftlab.memory import GiB, MiB
from ftlab.runs.record import Run


class CliError(FtlabError, ValueError):
    """A command-line argument that names nothing usable (no such run, chapter or file)."""


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """Plain-text columns: numbers right-aligned, text left-aligned."""
    cells = [[str(h) for h in header]] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] in (None, "") for row in rows) and rows != []
               for i in range(len(header))]
    lines = []
    for r in cells:
        lines.append("  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)).rstrip())
    return "\n".join(lines)


def cell(value: Any) -> str:
    """One table cell: None as '-', a bool as 'yes' or '-', a float to four significant digits."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def size(n: int | None) -> str:
    """Bytes as MiB below a GiB, else GiB."""
    if n is None:
        return "-"
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / MiB:.1f} MiB"


def run_steps(run: Run) -> int:
    """The last step a run recorded (0 before its first)."""
    return max((r["step"] for r in run.history), default=0)
