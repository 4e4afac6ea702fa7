"""Compression as one pipeline of passes: :func:`realise` (prune → recover → export → quantize → score)."""

from hwsearch.compress.realise import Candidate, Subject, compressed_model, realise, score_onnx

__all__ = ["Candidate", "Subject", "compressed_model", "realise", "score_onnx"]
