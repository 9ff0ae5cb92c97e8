"""The lines node-seq adds to ``fairseq-generate``'s output, defined once: the fairseq plugin prints them
(:mod:`node_seq.fairseq.nfe_logging`), the scorer (:mod:`node_seq.text.score`) and the benchmarks read
them back.

* ``NODE NFE``, after fairseq's ``Translated N sentences`` summary: the mean NFE per sentence and its
  spread over the run's sentences.
* ``N-<id>\\t<nfe>``, one per sentence beside fairseq's ``H-``/``D-`` lines (``--task node_translation``
  only: a model never sees sample ids, the task does).
"""

from __future__ import annotations

import re
import statistics
from typing import Sequence

_HEAD, _UNIT = "NODE NFE: ", " function evaluations per sentence"
_NFE = re.compile(re.escape(_HEAD) + r"([0-9.]+)" + re.escape(_UNIT))
_SENTENCE_NFE = re.compile(r"^N-([0-9]+)\t([0-9.]+)$", re.MULTILINE)


def nfe_line(nfe_per_sentence: Sequence[float]) -> str:
    """``NODE NFE: 135.2 function evaluations per sentence (encoder + all decoding steps, forward only;
    over 3 sentences: sd 4.1, min 130.0, median 135.0, max 140.5)``."""
    values = [float(v) for v in nfe_per_sentence]
    spread = (f"over {len(values)} sentences: sd {statistics.pstdev(values):.1f}, min {min(values):.1f}, "
              f"median {statistics.median(values):.1f}, max {max(values):.1f}")
    return f"{_HEAD}{statistics.fmean(values):.1f}{_UNIT} (encoder + all decoding steps, forward only; {spread})"


def read_nfe(text: str) -> float | None:
    """The NFE per sentence of the last ``NODE NFE`` line in ``text`` (a generate log); None without one."""
    found = _NFE.findall(text)
    return float(found[-1]) if found else None


def sentence_nfe_line(sample_id: int, nfe: float) -> str:
    """``N-<id>\\t<nfe>``: one sentence's NFE, encoder plus every decoding step (mean over its beams)."""
    return f"N-{sample_id}\t{nfe:.2f}"


def read_sentence_nfe(text: str) -> dict[int, float]:
    """The NFE of each sentence of a generate log, by sample id, from its ``N-`` lines (empty without)."""
    return {int(sample_id): float(nfe) for sample_id, nfe in _SENTENCE_NFE.findall(text)}
