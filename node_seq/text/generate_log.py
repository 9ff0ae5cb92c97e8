"""The ``NODE NFE`` line node-seq adds to ``fairseq-generate``'s log, defined once: the fairseq plugin
prints it (:mod:`node_seq.fairseq.nfe_logging`), the scorer (:mod:`node_seq.text.score`) and the
benchmarks read it back.
"""

from __future__ import annotations

import re

_HEAD, _UNIT = "NODE NFE: ", " function evaluations per sentence"
_NFE = re.compile(re.escape(_HEAD) + r"([0-9.]+)" + re.escape(_UNIT))


def nfe_line(per_sentence: float) -> str:
    """``NODE NFE: 135.2 function evaluations per sentence (encoder + all decoding steps, forward only)``."""
    return f"{_HEAD}{per_sentence:.1f}{_UNIT} (encoder + all decoding steps, forward only)"


def read_nfe(text: str) -> float | None:
    """The NFE per sentence of the last ``NODE NFE`` line in ``text`` (a generate log); None without one."""
    found = _NFE.findall(text)
    return float(found[-1]) if found else None
