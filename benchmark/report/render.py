"""Render ``report.qmd`` to one self-contained ``report.html``: Quarto, or pandoc.

Quarto is used when asked for, or (``engine="auto"``) when a ``quarto`` executable is on
PATH; otherwise pandoc from the ``pypandoc-binary`` wheel, which every install has. Both
write to a temporary name in the run directory and rename over ``report.html``, so a
failed render never leaves half a report.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmark.store import REPORT_HTML, atomic_write

ENGINES = ("auto", "quarto", "pandoc")
QUARTO_TIMEOUT_S = 600


def _engine_iv(engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"`engine` must be one of {', '.join(map(repr, ENGINES))}, "
                         f"got {engine!r}")
    return engine


def resolve_engine(engine: str = "auto") -> str:
    """``"quarto"`` or ``"pandoc"``: the renderer :func:`render` will use."""
    engine = _engine_iv(engine)
    if engine == "auto":
        return "quarto" if shutil.which("quarto") else "pandoc"
    if engine == "quarto" and not shutil.which("quarto"):
        raise RuntimeError(
            "engine='quarto' but no `quarto` executable is on PATH; install Quarto "
            "(https://quarto.org) or use engine='pandoc' (or 'auto')."
        )
    return engine


def render(qmd: Path, *, engine: str, title: str, css: Path, bibliography: Path) -> Path:
    """Render ``qmd`` with ``engine`` (``auto``, ``quarto`` or ``pandoc``) next to it.

    Returns the path of ``report.html``. ``title`` (plain text), ``css`` and
    ``bibliography`` are passed to pandoc; Quarto reads them from the front matter.
    """
    qmd = Path(qmd)
    out = qmd.parent / REPORT_HTML
    if resolve_engine(engine) == "quarto":
        _render_quarto(qmd, out)
    else:
        atomic_write(out, lambda tmp: _render_pandoc(qmd, tmp, title, css, bibliography))
    return out


def _render_quarto(qmd: Path, out: Path) -> None:
    quarto = shutil.which("quarto")
    if quarto is None:  # resolve_engine checked; PATH may have changed since
        raise RuntimeError("no `quarto` executable on PATH")
    # Quarto writes beside the input; give it a temporary name, then rename.
    partial = out.with_name(f"{out.stem}.rendering.html")
    cmd = [quarto, "render", qmd.name, "--to", "html", "--output", partial.name]
    try:
        proc = subprocess.run(cmd, cwd=qmd.parent, capture_output=True, text=True,
                              timeout=QUARTO_TIMEOUT_S, check=False)
        if proc.returncode != 0 or not partial.exists():
            tail = (proc.stderr or proc.stdout or "").strip()[-2000:]
            raise RuntimeError(
                f"`quarto render` failed (exit {proc.returncode}) for {qmd}:\n{tail}\n"
                "Re-run with engine='pandoc' to render without Quarto."
            )
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)


def _render_pandoc(qmd: Path, tmp: Path, title: str, css: Path, bibliography: Path) -> None:
    import pypandoc  # imported here: only this engine needs it

    css = Path(css).resolve()
    css_text = css.read_text(encoding="utf-8")
    # --embed-resources re-parses and re-writes the whole 9 MB output (about two thirds
    # of pandoc's time) only to inline the stylesheet: every other resource (plotly.js,
    # images) is inline already. The stylesheet goes into the header instead, unless it
    # refers to other files (url(), @import) that only --embed-resources would inline.
    embed = bool(re.search(r"url\(|@import|</style", css_text, flags=re.IGNORECASE))
    args = [
        "--standalone",
        # Without --css pandoc would add its own document CSS (fonts, widths): off.
        *(["--embed-resources", f"--css={css}"] if embed
          else ["--wrap=none", "--metadata=document-css:false"]),
        # Tabs inside raw HTML (plotly.js string literals) must reach the output unchanged.
        "--preserve-tabs",
        "--toc",
        "--toc-depth=2",
        "--section-divs",
        # A command-line string is taken literally (not as markdown) and escaped on output.
        f"--metadata=title:{title}",
        "--metadata=toc-title:Contents",
        "--citeproc",
        f"--bibliography={Path(bibliography).resolve()}",
        "--metadata=link-citations:true",
        f"--resource-path={qmd.parent.resolve()}",
    ]
    with tempfile.TemporaryDirectory() as work:
        if not embed:
            header = Path(work) / "style.html"
            header.write_text(f'<style type="text/css">\n{css_text}\n</style>\n',
                              encoding="utf-8")
            args.append(f"--include-in-header={header}")
        pypandoc.convert_file(
            str(qmd.resolve()),
            to="html5",
            format="markdown",
            outputfile=str(tmp),
            extra_args=args,
            cworkdir=str(qmd.parent.resolve()),
        )
