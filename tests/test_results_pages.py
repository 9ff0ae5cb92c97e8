"""The results pages: every result file on a page, figures read from the JSON, no committed results .md."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from statistics import mean, stdev

import pytest

from benchmarks import pages

REPO = pages.RESULTS.parent.parent


def test_every_result_file_is_on_exactly_one_page():
    on_pages = [r.name for t in pages.TOPICS for r in t.results]
    assert len(on_pages) == len(set(on_pages))
    assert set(p.stem for p in pages.RESULTS.glob("*.json")) <= set(on_pages)


def test_a_topic_not_measured_yet_names_its_command_and_its_findings_read_the_file(tmp_path):
    """``row_compaction.json`` is the lead's to measure: without it the page names the command; with it
    the findings are read from it (a made-up file here)."""
    results = _results_copy(tmp_path)
    (results / "row_compaction.json").unlink(missing_ok=True)
    pages.write_results_pages(tmp_path / "out", results)
    assert "Not measured yet. `benchmarks/results/row_compaction.json` is written by `python -m " \
        "benchmarks.row_compaction" in (tmp_path / "out" / "row-compaction.md").read_text(encoding="utf-8")
    rows = [{"batch_size": size, "solver": solver, "ratio_to_sequence": ratio, "row_evaluations_per_sentence": work,
             "bleu": 35.0, "translations_differing_from_sequence": 0, "words_per_s": 100.0 * ratio}
            for size, speedup in ((1, 1.01), (32, 1.4))
            for solver, ratio, work in (("batch", 1.1, 90.0), ("sequence", 1.0, 90.0),
                                        ("sequence, compacted", speedup, 60.0), ("fixed rk4:2", 3.0, 40.0))]
    (results / "row_compaction.json").write_text(json.dumps({"command": "python -m benchmarks.row_compaction x",
                                                             "meta": {"rounds": 3}, "rows": rows}), encoding="utf-8")
    pages.write_results_pages(tmp_path / "out", results)
    page = (tmp_path / "out" / "row-compaction.md").read_text(encoding="utf-8")
    assert "batch 32: 1.40x, rows evaluated per sentence 60 instead of 90" in page
    assert "compaction pays (5% or more) at batch sizes 32 and does not at 1" in page


@pytest.mark.slow
def test_no_results_markdown_is_committed():
    tracked = subprocess.run(["git", "ls-files", "benchmarks/results", "docs/results"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    assert [p for p in tracked if p.endswith(".md")] == ["docs/results/archive.md"]


def test_pages_show_each_file_with_command_machine_date_and_plot(tmp_path):
    written = pages.write_results_pages(tmp_path)
    assert {p.name for p in written} == {"index.md", "archive.md", *(f"{t.slug}.md" for t in pages.TOPICS)}
    memory = (tmp_path / "memory.md").read_text(encoding="utf-8")
    record = json.loads((pages.RESULTS / "memory.json").read_text(encoding="utf-8"))
    assert f"Command: `{record['command']}`" in memory and f"Date: {record['meta']['machine']['date']}" in memory
    assert "![memory.png](memory.png)" in memory and (tmp_path / "memory.png").is_file()
    assert all(f"({t.slug}.md)" in (tmp_path / "index.md").read_text(encoding="utf-8") for t in pages.TOPICS)


def _results_copy(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(pages.RESULTS, results, ignore=shutil.ignore_patterns("*_hypotheses"))
    return results


def test_quality_findings_are_computed_over_every_seed(tmp_path):
    """Change the seed-4 record: the page's mean ± sd and gain follow, computed here a second way."""
    results = _results_copy(tmp_path)
    external = json.loads((results / "multi30k_quality_external.json").read_text(encoding="utf-8"))
    next(r for r in external["rows"] if r.get("variant") == "baseline")["bleu"] = 32.0
    (results / "multi30k_quality_external.json").write_text(json.dumps(external), encoding="utf-8")
    pages.write_results_pages(tmp_path / "out", results)
    page = (tmp_path / "out" / "multi30k-quality.md").read_text(encoding="utf-8")

    records = json.loads((results / "multi30k_quality.json").read_text(encoding="utf-8"))
    records += [r for r in external["rows"] if "bleu" in r]  # the other test sets hold differences only
    base = [r["bleu"] for r in records if r.get("variant") == "baseline"]
    gated = [r["bleu"] for r in records if r.get("variant") == "node-encoder-rk2-gated"]
    assert len(base) == len(gated) == 4
    assert f"baseline scores {mean(base):.2f} ± {stdev(base):.2f}" in page
    assert f"rk2-gated {mean(gated):.2f} ± {stdev(gated):.2f}" in page
    assert f"mean gain of {mean(gated) - mean(base):+.2f} BLEU, larger than" in page


def test_a_figure_in_the_prose_is_read_from_the_json(tmp_path):
    results = _results_copy(tmp_path)
    record = json.loads((results / "fsdp_parity_cpu.json").read_text(encoding="utf-8"))
    record["rows"][1]["max_loss_rel_difference"] = 0.25
    (results / "fsdp_parity_cpu.json").write_text(json.dumps(record), encoding="utf-8")
    pages.write_results_pages(tmp_path / "out", results)
    assert "relative difference of 0.25," in (tmp_path / "out" / "fsdp-parity.md").read_text(encoding="utf-8")


def test_cli_refuses_a_results_folder_that_is_not_there(tmp_path):
    with pytest.raises(SystemExit, match="--results: .*nowhere is not a folder"):
        pages.main(["--out", str(tmp_path / "out"), "--results", str(tmp_path / "nowhere")])
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_writes_the_pages(tmp_path):
    subprocess.run([sys.executable, "-m", "benchmarks.pages", "--out", str(tmp_path)], cwd=REPO, check=True,
                   capture_output=True)
    assert (tmp_path / "multi30k-quality.md").read_text(encoding="utf-8").startswith("# Quality on Multi30k")


def test_table_has_every_flat_column_in_first_seen_order():
    rows = [{"variant": "a", "bleu": 35.5, "seeds": [1, 2], "nested": {"x": 1}}, {"variant": "b|c", "p": None}]
    assert pages.table(rows).splitlines() == ["| variant | bleu | seeds | p |", "|---|---|---|---|",
                                               "| a | 35.5 | 1, 2 | - |", "| b/c | - | - | - |"]


def test_rewriting_leaves_unchanged_pages_untouched(tmp_path):
    """``mkdocs serve`` rebuilds on every write into the docs folder: a second run writes only what changed."""
    pages.write_results_pages(tmp_path)
    (tmp_path / "memory.md").write_text("stale", encoding="utf-8")
    os.utime(tmp_path / "index.md", ns=(0, 0))
    pages.write_results_pages(tmp_path)
    assert (tmp_path / "index.md").stat().st_mtime_ns == 0
    assert (tmp_path / "memory.md").read_text(encoding="utf-8").startswith("# Peak memory")
