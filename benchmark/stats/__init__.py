"""Statistics for saliency-bench: case bootstrap as linear algebra (see STATISTICS.md).

Every statistic is a function of case weights. One count matrix ``C`` (``n_boot x
n_cases``, :func:`draw_counts`) is drawn per split; the estimate is the statistic at
weights ``ones``, the bootstrap replicates at ``C`` and the jackknife values (for the BCa
acceleration) at ``1 - I``. Thousands of statistics go through one matrix product, and
all statistics of a split share the same draws, so their differences are paired.

Modules
-------
resample
    :func:`draw_counts` and the per-split seed :func:`~benchmark.stats.resample.split_seed`.
aggregate
    Image values -> per-case numerators and denominators of the two estimands.
intervals
    :func:`percentile_interval` and :func:`bca_interval`, vectorised over statistics.
engine
    The chunked matrix-product bootstrap of many ratio statistics.
ci
    :func:`bootstrap_ci` and :class:`BootstrapResult` for one statistic.
summary
    :func:`bootstrap` (result object) and :func:`summarize` (table): intervals of every
    cell of a tidy scores table.
compare, permutation
    :func:`compare`: paired differences, permutation p and multiplicity of pairs of cells.
correlation
    :func:`spearman_table`: Spearman rho of model probability and each metric over cases.
mixed
    :func:`mixed_model_table`: the mixed-model sensitivity analysis (statsmodels MixedLM).
baselines
    :func:`~benchmark.stats.baselines.flag_baselines`: explainers that do not beat the null
    baselines.
auroc, classification
    AUROC as a function of case weights; :func:`classification_table`.
"""

from benchmark.stats.ci import BootstrapResult, ConfidenceInterval, bootstrap_ci
from benchmark.stats.classification import classification_table
from benchmark.stats.comparisons import ComparisonTable, compare
from benchmark.stats.correlation import spearman_table
from benchmark.stats.intervals import bca_interval, percentile_interval
from benchmark.stats.mixed import mixed_model_table
from benchmark.stats.omnibus import friedman, nemenyi_cd
from benchmark.stats.resample import draw_counts
from benchmark.stats.summary import BootstrapTable, bootstrap, summarize

__all__ = [
    "BootstrapResult",
    "BootstrapTable",
    "ComparisonTable",
    "ConfidenceInterval",
    "bca_interval",
    "bootstrap",
    "bootstrap_ci",
    "classification_table",
    "compare",
    "draw_counts",
    "friedman",
    "mixed_model_table",
    "nemenyi_cd",
    "percentile_interval",
    "spearman_table",
    "summarize",
]
