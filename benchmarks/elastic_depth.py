"""Elastic depth: trained NODE translation models decoded again with other methods and step counts.

    python -m benchmarks.elastic_depth DATA_DIR OUT_DIR --model rk2=runs/rk2/checkpoint_best.pt \\
        [--model ...] [--settings trained,euler:1,euler:2,euler:4,rk4:1] [-- fairseq-generate options]

Each setting decodes DATA_DIR's test split with ``fairseq-generate --model-overrides`` and scores
it against ``DATA_DIR/raw/test.<target>`` (sacreBLEU, chrF2, NFE per sentence). A setting is
``trained`` (the checkpoint as trained), ``METHOD:STEPS`` (a fixed grid of STEPS steps per ODE
block) or ``METHOD@RTOL`` (an adaptive method at that relative tolerance, absolute tolerance
RTOL / 10). This is the translation counterpart of ``vision.evaluate``'s solver swap (the loop, table
and plot of both are :mod:`node_seq.elastic`'s): a model whose BLEU holds on a finer grid has learned
a vector field; one whose BLEU collapses has learned its discretisation. A model trained with a learned
block (``rk2_gated``, ``pc``) decoded with another method drops its learned coefficients.

Writes ``OUT_DIR/elastic_depth.{json,md,png}`` and each decoding's log under ``OUT_DIR/logs/``. The
rows of models already in ``OUT_DIR/elastic_depth.json`` and not named this time are kept (a model
named again is replaced), so models with different settings, e.g. a learned block's own method, can
be added one call at a time to one table and one plot.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from benchmarks.multi30k_decode import command_line, decode, parse_model, target_language
from node_seq import elastic
from node_seq.ode import ADAPTIVE_METHODS, FIXED_GRID_METHODS, LEARNED_METHODS

DEFAULT_SETTINGS = "trained,euler:1,euler:2,euler:4,midpoint:1,rk4:1"


@dataclasses.dataclass(frozen=True)
class Setting:
    """How a model is decoded: as trained (``method`` None), on a fixed grid, or adaptively."""

    method: str | None = None
    steps: int | None = None
    rtol: float | None = None

    @property
    def label(self) -> str:
        if self.method is None:
            return "trained"
        return f"{self.method}:{self.steps}" if self.steps is not None else f"{self.method}@{self.rtol:g}"

    def overrides(self) -> dict:
        if self.method is None:
            return {}
        if self.steps is not None:
            return {"node_method": self.method, "node_steps": self.steps, "node_step_size": None}
        return {"node_method": self.method, "node_rtol": self.rtol, "node_atol": self.rtol / 10}


def parse_setting(text: str) -> Setting:
    """``trained``, ``METHOD:STEPS`` or ``METHOD@RTOL``; a bad one names ``--settings`` and what it allows."""
    fixed, adaptive = FIXED_GRID_METHODS + LEARNED_METHODS, ADAPTIVE_METHODS
    allowed = (f"'trained', METHOD:STEPS with METHOD one of {', '.join(fixed)}, or METHOD@RTOL with METHOD one "
               f"of {', '.join(adaptive)}")
    try:
        if text == "trained":
            return Setting()
        if ":" in text:
            method, steps = text.split(":", 1)
            if method in fixed and int(steps) >= 1:
                return Setting(method, steps=int(steps))
        elif "@" in text:
            method, rtol = text.split("@", 1)
            if method in adaptive and float(rtol) > 0:
                return Setting(method, rtol=float(rtol))
    except ValueError:
        pass
    raise SystemExit(f"--settings: {text!r} is not a setting; use {allowed}")


COLUMNS: list[elastic.Column] = [
    ("model", lambda r: r["model"]),
    ("decoded with", lambda r: r["setting"]),
    ("NFE/sentence", lambda r: "-" if r["nfe_per_sentence"] is None else f"{r['nfe_per_sentence']:.1f}"),
    ("BLEU", lambda r: f"{r['bleu']:.2f}"),
    ("chrF2", lambda r: f"{r['chrf']:.2f}"),
]


def markdown(rows: list[dict]) -> str:
    return elastic.markdown(rows, COLUMNS) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    """BLEU against NFE per sentence, one marker colour per model, each point labelled with its setting."""
    from node_seq.plotting import plot_lines

    series = elastic.series(rows, by="model", x="nfe_per_sentence", y="bleu", label="setting")
    plot_lines(series, str(path), title="Elastic depth: decoded with other solvers than trained with",
               xlabel="NFE per sentence (encoder + all decoding steps)", ylabel="sacreBLEU", log_x=10,
               styles={model: {"linestyle": "none"} for model in series})  # settings, not a curve


def main(argv: list[str] | None = None) -> list[dict]:
    parser, argv, extra = command_line(__doc__.splitlines()[0], argv)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=CHECKPOINT")
    parser.add_argument("--settings", default=DEFAULT_SETTINGS, help=f"comma-separated (default {DEFAULT_SETTINGS})")
    args = parser.parse_args(argv)
    settings = [parse_setting(s) for s in args.settings.split(",") if s]
    models = [parse_model(m) for m in args.model]
    target_language(args.data_dir)  # every check before any decoding
    (args.out_dir / "logs").mkdir(parents=True, exist_ok=True)
    saved = args.out_dir / "elastic_depth.json"
    named = {name for name, _ in models}
    rows = [r for r in json.loads(saved.read_text(encoding="utf-8")) if r["model"] not in named] \
        if saved.is_file() else []

    def score(point: tuple[str, Path, Setting]) -> dict:
        name, checkpoint, setting = point
        log = args.out_dir / "logs" / f"{name}.{setting.label.replace(':', '-').replace('@', '-at-')}.log"
        return decode(args.data_dir, checkpoint, log, extra, overrides=setting.overrides())

    points = [({"model": name, "checkpoint": str(checkpoint), "setting": setting.label, **setting.overrides()},
                 (name, checkpoint, setting)) for name, checkpoint in models for setting in settings]
    rows += elastic.evaluate_settings(points, score, report=lambda row: print(markdown([row]).splitlines()[-1],
                                                                                flush=True))
    saved.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    (args.out_dir / "elastic_depth.md").write_text(markdown(rows), encoding="utf-8")
    plot(rows, args.out_dir / "elastic_depth.png")
    return rows


if __name__ == "__main__":
    main()
