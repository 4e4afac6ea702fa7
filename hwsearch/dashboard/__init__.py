"""The run dashboard: data first (:mod:`.data`), then rendering (:mod:`.render`)."""

from hwsearch.dashboard.render import render, write_dashboard

__all__ = ["render", "write_dashboard"]
