"""Score ``fairseq-generate`` output against raw references: sacreBLEU, chrF2, exact match, NFE.

    python -m node_seq.text.score GENERATE_LOG REFERENCE_FILE

reads the ``D-<id>`` lines (detokenized hypotheses, in fairseq's order) and the ``NODE NFE`` line
that node-seq adds to fairseq-generate's log, and prints a few lines a person can read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import sacrebleu

from .generate_log import read_nfe


def read_hypotheses(generate_log: str | Path) -> dict[int, str]:
    hypotheses = {}
    for line in Path(generate_log).read_text(encoding="utf-8").splitlines():
        if line.startswith("D-"):
            head, _score, text = (line.split("\t", 2) + ["", ""])[:3]
            hypotheses[int(head[2:])] = text.strip()
    if not hypotheses:
        raise ValueError(f"{generate_log}: no 'D-' lines; is it fairseq-generate output?")
    return hypotheses


def score(generate_log: str | Path, references: str | Path, hypotheses: dict[int, str] | None = None) -> dict:
    """BLEU (with its n-gram precisions and length ratio), chrF2, exact match and NFE of a generate log
    (``hypotheses``: its ``D-`` lines, if already read)."""
    hypotheses = read_hypotheses(generate_log) if hypotheses is None else hypotheses
    refs = Path(references).read_text(encoding="utf-8").splitlines()
    missing = [i for i in hypotheses if i >= len(refs)]
    if missing:
        raise ValueError(f"{references}: has {len(refs)} lines but the log has sentence id {max(missing)}")
    if len(hypotheses) != len(refs):
        raise ValueError(f"{generate_log}: {len(hypotheses)} hypotheses for {len(refs)} references; fairseq-generate "
                         "drops a last batch smaller than --required-batch-size-multiple (default 8): pass "
                         "--required-batch-size-multiple 1")
    ids = sorted(hypotheses)
    hyps, gold = [hypotheses[i] for i in ids], [refs[i].strip() for i in ids]
    bleu = sacrebleu.corpus_bleu(hyps, [gold])
    return {
        "sentences": len(ids),
        "bleu": round(bleu.score, 2),
        # BLEU's parts: most differences between seeds here are length (the brevity penalty), not n-grams
        "precisions": [round(p, 1) for p in bleu.precisions],
        "length_ratio": round(bleu.sys_len / bleu.ref_len, 3),
        "chrf": round(sacrebleu.corpus_chrf(hyps, [gold]).score, 2),
        "exact_match": round(100.0 * sum(h == g for h, g in zip(hyps, gold)) / len(ids), 2),
        "nfe_per_sentence": read_nfe(Path(generate_log).read_text(encoding="utf-8")),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("generate_log")
    parser.add_argument("references")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--hypotheses-out", metavar="FILE",
                        help="also write the detokenized hypotheses, one per line in reference order (for "
                             "sacrebleu's own tools, e.g. --paired-bs between two systems)")
    args = parser.parse_args(argv)
    hypotheses = read_hypotheses(args.generate_log)
    result = score(args.generate_log, args.references, hypotheses)
    if args.hypotheses_out:
        Path(args.hypotheses_out).write_text("".join(hypotheses[i] + "\n" for i in sorted(hypotheses)),
                                             encoding="utf-8")
    if args.json:
        print(json.dumps(result))
        return
    print(f"sentences      {result['sentences']}")
    print(f"sacreBLEU      {result['bleu']:.2f}")
    print(f"chrF2          {result['chrf']:.2f}")
    print(f"exact match    {result['exact_match']:.2f}%")
    if result["nfe_per_sentence"] is not None:
        print(f"NFE/sentence   {result['nfe_per_sentence']:.1f} (forward evaluations of all ODE blocks)")


if __name__ == "__main__":
    main()
