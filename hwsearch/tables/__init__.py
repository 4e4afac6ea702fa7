"""Latency tables: kernel keys, table files and their checks, calibration, reference models, machine
adaptations, and the built-in tables' records (``builtin.py``)."""
