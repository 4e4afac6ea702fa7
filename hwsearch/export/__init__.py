"""Ship winners: rebuild from stored policies (:mod:`.winners`, :mod:`.ship`), pick per speedup target (:mod:`.targets`),
recover (:mod:`.recover`), verify and re-measure (:mod:`.verify`), describe (:mod:`.manifest`, :mod:`.describe`),
rank and recommend (:mod:`.index`)."""

from hwsearch.export.index import build_index, format_index, load_index, write_index
from hwsearch.export.manifest import DenseReference, Manifest
from hwsearch.export.ship import build_winner, export_run, export_winner, measure_dense
from hwsearch.export.targets import parse_targets, pick_targets
from hwsearch.export.verify import Parity, verify_winner

__all__ = ["DenseReference", "Manifest", "Parity", "build_index", "build_winner", "export_run", "export_winner", "format_index", "load_index",
           "measure_dense", "parse_targets", "pick_targets", "verify_winner", "write_index"]
