"""Escaping and number formatting shared by the report modules.

Every string that comes from the user (model, method, dataset and split names, versions,
machine names) passes through :func:`md` before it enters markdown and through
:func:`html_text` before it enters raw HTML or a plotly figure. Pandoc's markdown reader
passes raw HTML through untouched, so an unescaped ``<script>`` in a model name would run
in the reader's browser.
"""

from __future__ import annotations

import html
import math
import re
import string
from collections.abc import Sequence
from typing import Any

# Pandoc markdown allows a backslash before any ASCII punctuation and then treats the
# character literally; escaping all of them is simpler and safer than a hand-picked
# subset (``@`` starts a citation, ``|`` ends a table cell, ``$`` starts math, ``<``
# starts raw HTML, ``:`` can start a definition list).
_MD_ESCAPES = {c: "\\" + c for c in string.punctuation}

EMPTY_CELL = "\u2014"  # em dash: a missing or undefined number


def md(text: Any) -> str:
    """``text`` as literal markdown: punctuation backslash-escaped, newlines flattened."""
    flat = " ".join(str(text).split())
    return "".join(_MD_ESCAPES.get(c, c) for c in flat)


def md_code(text: Any) -> str:
    """``text`` as inline code, with a fence longer than any backtick run inside it."""
    flat = " ".join(str(text).split())
    fence = "`" * (_longest_backtick_run(flat) + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def html_text(text: Any) -> str:
    """``text`` escaped for HTML text and attribute values (plotly labels accept entities)."""
    return html.escape(str(text), quote=True)


def mpl_text(text: Any) -> str:
    """``text`` safe for a matplotlib title: ``$`` would start mathtext and can raise."""
    return str(text).replace("$", r"\$")


def raw_html_block(content: str) -> str:
    """A pandoc/Quarto raw HTML block whose fence cannot occur inside ``content``."""
    fence = "`" * max(3, _longest_backtick_run(content) + 1)
    return f"{fence}{{=html}}\n{content}\n{fence}\n"


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall("`+", text)), default=0)


def is_missing(value: Any) -> bool:
    """True for None and NaN (the tables use NaN for undefined statistics)."""
    if value is None:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def fmt_num(value: Any, digits: int = 2) -> str:
    """A number with ``digits`` decimals, or an em dash when missing."""
    if is_missing(value):
        return EMPTY_CELL
    text = f"{float(value):.{digits}f}"
    # a difference that rounds to zero (-0.001 -> "-0.00") prints without a sign
    return text[1:] if text.startswith("-") and float(text) == 0.0 else text


def fmt_ci(estimate: Any, low: Any, high: Any, digits: int = 2) -> str:
    """``estimate [low, high]``; the interval is dropped when it is undefined."""
    if is_missing(estimate):
        return EMPTY_CELL
    if is_missing(low) or is_missing(high):
        return fmt_num(estimate, digits)
    return f"{fmt_num(estimate, digits)} [{fmt_num(low, digits)}, {fmt_num(high, digits)}]"


def pipe_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None
) -> str:
    """A pandoc pipe table. Cells must already be markdown (escaped by the caller).

    ``align`` holds one letter per column: ``l`` (left), ``r`` (right) or ``c``.
    """
    if align is None:
        align = "l" * len(header)
    if len(align) != len(header):
        raise ValueError(f"`align` has {len(align)} letters for {len(header)} columns")
    rule = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(rule[a] for a in align) + "|",
    ]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"table row has {len(row)} cells for {len(header)} columns")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
