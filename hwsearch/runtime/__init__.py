"""Everything that touches ONNX Runtime and ONNX files: sessions, export, quantization, timing.

- :mod:`~hwsearch.runtime.session`: ORT sessions with recorded settings, running feeds, the optimised graph.
- :mod:`~hwsearch.runtime.onnx_export`: torch → ONNX with nodes named after their modules.
- :mod:`~hwsearch.runtime.quantize`: per-layer precision (int8 static QDQ, fp16) on an exported file.
- :mod:`~hwsearch.runtime.timing`: the one timing loop and the measurement lock.
"""
