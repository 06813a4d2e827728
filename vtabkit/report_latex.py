"""LaTeX tables that compile as written: every text cell escaped, booktabs rules, bold by choice.

The output is a ``table`` environment to ``\\input`` into a paper whose preamble loads
``booktabs`` (the first line says so); tests compile it with a real TeX engine.
"""

from __future__ import annotations

from typing import Iterable, Sequence

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
            "±": r"$\pm$", "×": r"$\times$", "−": "-", "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}


def escape(text: object) -> str:
    """``text`` as LaTeX that prints it literally (model names hold _, %, # and worse)."""
    return "".join(_SPECIAL.get(character, character) for character in str(text))


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *, bold: Iterable[tuple[int, int]] = (),
          rules_before: Iterable[int] = (), caption: str | None = None, text_columns: int = 1) -> str:
    """A booktabs ``table`` of plain-text ``header`` and ``rows`` (all escaped here).

    ``bold``: (row, column) cells set in bold; ``rules_before``: row indices that get a
    ``\\midrule`` above them; the first ``text_columns`` columns are left-aligned, the rest right.
    """
    bold = set(bold)
    rules = set(rules_before)
    align = "l" * text_columns + "r" * (len(header) - text_columns)
    lines = [r"% vtabkit table; needs \usepackage{booktabs} in the preamble", r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(r"\caption{" + escape(caption) + "}")
    lines += [r"\begin{tabular}{" + align + "}", r"\toprule",
              " & ".join(escape(cell) for cell in header) + r" \\", r"\midrule"]
    for number, row in enumerate(rows):
        if number in rules and number > 0:
            lines.append(r"\midrule")
        cells = [(r"\textbf{" + escape(cell) + "}") if (number, column) in bold and cell else escape(cell)
                 for column, cell in enumerate(row)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
