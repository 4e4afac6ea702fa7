"""Ship winners: rebuild from stored policies (:mod:`.winners`), verify and re-measure (:mod:`.verify`), describe (:mod:`.manifest`)."""

from hwsearch.export.manifest import Manifest
from hwsearch.export.verify import Parity, build_winner, export_run, export_winner, verify_winner

__all__ = ["Manifest", "Parity", "build_winner", "export_run", "export_winner", "verify_winner"]
