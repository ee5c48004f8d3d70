"""saliency-bench: does a medical-imaging classifier look where a radiologist would?

Public API (see DESIGN.md):

- :func:`benchmark.run` runs the whole pipeline for a :class:`~benchmark.config.RunConfig`
  and returns a :class:`~benchmark.store.Run`;
- :func:`benchmark.load_run` opens an existing run directory;
- :func:`benchmark.metrics.compute` scores batches of saliency maps;
- :func:`benchmark.stats.bootstrap_ci` and the count-matrix bootstrap in
  :mod:`benchmark.stats`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from benchmark.store import Run


def run(config: Any = None, **overrides: Any) -> Run:
    """Run load -> explain -> score -> analyse -> report and return the run.

    Parameters
    ----------
    config : RunConfig, dict, path to a YAML file, or None
        The run configuration; ``None`` uses the defaults (the embedded demo).
    **overrides
        Fields of :class:`~benchmark.config.RunConfig` that replace those of ``config``.
    """
    from benchmark.pipeline import run as _run

    return _run(config, **overrides)


def load_run(path: Any) -> Run:
    """Open the run directory ``path`` (written by :func:`run` or ``bench run``)."""
    from benchmark.store import Run

    return Run.open(path)


__all__ = ["__version__", "load_run", "run"]
