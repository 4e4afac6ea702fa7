"""Multi-objective compression search: driver (ask/tell), executors (in-process / Ray), baselines.

Public API: :func:`run_search` (main run), :func:`run_baseline` (uniform / random baselines),
:class:`SearchStats`, :class:`Evaluator`, :class:`TrialResult`. Storage is documented in
:mod:`hwsearch.search.study`, result files in :mod:`hwsearch.results`.
"""

from hwsearch.search.baselines import BASELINES, run_baseline
from hwsearch.search.driver import SearchStats, run_search
from hwsearch.search.evaluate import Evaluator, TrialResult

__all__ = ["BASELINES", "Evaluator", "SearchStats", "TrialResult", "run_baseline", "run_search"]
