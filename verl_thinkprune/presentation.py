"""What reaches a person: markdown tables and PNG figures (reports, evaluation, analysis), one-line error messages."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A markdown table. `align` has one letter per column, "l" or "r" (default: the first column left, the others,
    which hold numbers, right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    rule = ["---:" if letter == "r" else "---" for letter in align]
    lines = [headers, rule, *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines) + "\n"


def save_figure(figure: Figure, path: Path, dpi: int = 120) -> Path:
    """Lays the figure out and writes it as PNG (matplotlib's object API: no pyplot, no global backend switch)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    return path


def one_line(error: BaseException) -> str:
    """An error as one line for a command's answer: its message with line breaks folded, else its type."""
    return " ".join(str(error).split()) or type(error).__name__
