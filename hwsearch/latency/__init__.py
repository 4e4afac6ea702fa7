"""Per-device latency lookup tables: kernel keys, profiling, prediction and validation.

``load_predictor(table_dir, task, model, space)`` gives a :class:`Predictor` whose ``predict(policy)``
returns a :class:`Prediction` (``latency_ms``, ``coverage``, ``missing``) in microseconds, with no
export or measurement per call. Tables live in ``latency_tables/<device>/``.
"""

from hwsearch.latency.predict import Prediction, Predictor, load_predictor

__all__ = ["Prediction", "Predictor", "load_predictor"]
