"""Latency from per-device lookup tables: predict, and the commands that build and check a table.

- :mod:`~hwsearch.latency.predict`: one :class:`Predictor` over any model family's lowering;
- :mod:`~hwsearch.latency.profile`: time every kernel a search space can produce (``hwsearch profile``);
- :mod:`~hwsearch.latency.cases`: random whole models realised and timed (what the next two share);
- :mod:`~hwsearch.latency.calibrate`: fit the per-class correction on measured models (``calibrate-table``);
- :mod:`~hwsearch.latency.validate`: predicted vs measured on held-out models (``validate-table``).
"""

from hwsearch.latency.predict import Prediction, Predictor, load_predictor

__all__ = ["Prediction", "Predictor", "load_predictor"]
