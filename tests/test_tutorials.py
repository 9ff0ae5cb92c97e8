"""Every bash and python block of docs/tutorials/ runs, so a tutorial cannot go stale silently.

A page's blocks run in order in one scratch directory, as a reader runs them: each bash block in its
own ``bash -euo pipefail``, each python block in its own interpreter (a block is a script; state
passes between blocks through files). The environment is the reader's: the venv's ``bin/`` first on
``PATH``, ``NODE_SEQ`` the checkout (for ``user_dir/``, ``configs/``, ``benchmarks/``), and this
checkout's code first on ``PYTHONPATH``. A block opts out only with ```` ```bash skip-test: why ````.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "docs" / "tutorials"
LANGUAGES = {"bash": ["bash", "-euo", "pipefail"], "python": [sys.executable]}
FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<code>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
SKIP = re.compile(r"skip-test(?::\s*(?P<reason>\S.*))?$")
BLOCK_TIMEOUT_S = 600


@dataclasses.dataclass(frozen=True)
class Block:
    index: int  # 1-based, among the page's bash and python blocks
    line: int
    language: str
    code: str
    skip_reason: str | None = None


class BlockFailed(AssertionError):
    pass


def blocks(text: str, name: str = "<page>") -> list[Block]:
    """The bash and python blocks of a Markdown page, in order; other fences (output, yaml) are text."""
    found = []
    for match in FENCE.finditer(text):
        language, _, rest = match["info"].strip().partition(" ")
        if language not in LANGUAGES:
            continue
        skip_reason = None
        if rest.strip():
            skip = SKIP.fullmatch(rest.strip())
            if skip is None or skip["reason"] is None:
                raise ValueError(f"{name}: a block's info string may only add 'skip-test: <why it cannot run in "
                                 f"the tests>' after its language; got {match['info'].strip()!r}")
            skip_reason = skip["reason"]
        line = text.count("\n", 0, match.start()) + 1
        found.append(Block(len(found) + 1, line, language, match["code"], skip_reason))
    return found


def reader_environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["NODE_SEQ"] = str(ROOT)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    return env


def run_page(page: Path, workdir: Path) -> list[Block]:
    """Run ``page``'s blocks in order in ``workdir``; the first that exits non-zero fails with its index,
    line, code and output. Returns the blocks that ran."""
    env, ran = reader_environment(), []
    for block in blocks(page.read_text(encoding="utf-8"), page.name):
        if block.skip_reason:
            continue
        result = subprocess.run(LANGUAGES[block.language], input=block.code, cwd=workdir, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=BLOCK_TIMEOUT_S)
        if result.returncode != 0:
            raise BlockFailed(f"{page.name}: block {block.index} ({block.language}, line {block.line}) exited with "
                              f"{result.returncode}\n{block.code}--- output ---\n{result.stdout[-6000:]}")
        ran.append(block)
    return ran


@pytest.mark.slow  # each page trains or compiles a model: a minute or more (CI runs every tier)
@pytest.mark.parametrize("page", sorted(TUTORIALS.glob("*.md")), ids=lambda page: page.stem)
def test_tutorial_runs(page, tmp_path):
    run_page(page, tmp_path)


def test_index_links_every_tutorial():
    index = (TUTORIALS / "index.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(([\w-]+\.md)\)", index))
    assert linked == {page.name for page in TUTORIALS.glob("*.md")} - {"index.md"}


def write_page(tmp_path: Path, text: str) -> Path:
    page = tmp_path / "page.md"
    page.write_text(text, encoding="utf-8")
    (tmp_path / "work").mkdir()
    return page


@pytest.mark.slow
def test_blocks_share_the_directory_and_a_failure_names_its_block(tmp_path):
    page = write_page(tmp_path, "intro\n\n```bash\necho 3 > n.txt\n```\n\n```text\nnot run\n```\n\n"
                                "```python\nfrom pathlib import Path\nassert Path('n.txt').read_text() == '3\\n'\n"
                                "print('read it')\n```\n\n```python\nprint('before')\nraise SystemExit(4)\n```\n")
    with pytest.raises(BlockFailed, match=r"page.md: block 3 \(python, line 17\) exited with 4") as failure:
        run_page(page, tmp_path / "work")
    assert "print('before')" in str(failure.value) and "--- output ---\nbefore" in str(failure.value)


@pytest.mark.slow
def test_bash_blocks_stop_at_the_first_failing_command(tmp_path):
    page = write_page(tmp_path, "```bash\nfalse\necho reached > reached.txt\n```\n")
    with pytest.raises(BlockFailed, match="block 1 "):
        run_page(page, tmp_path / "work")
    assert not (tmp_path / "work" / "reached.txt").exists()


@pytest.mark.slow
def test_skip_marker_is_honoured_and_needs_a_reason(tmp_path):
    page = write_page(tmp_path, "```bash skip-test: needs a GPU\nexit 1\n```\n\n```bash\necho ok\n```\n")
    assert [block.index for block in run_page(page, tmp_path / "work")] == [2]
    with pytest.raises(ValueError, match="skip-test: <why"):
        blocks("```bash skip-test\nexit 1\n```\n")
    with pytest.raises(ValueError, match="got 'python --fast'"):
        blocks("```python --fast\npass\n```\n")


@pytest.mark.slow
def test_blocks_see_the_reader_environment(tmp_path):
    check = "import node_seq, os; assert node_seq.__file__.startswith(os.environ['NODE_SEQ'])"
    page = write_page(tmp_path, f"```bash\ntest -f \"$NODE_SEQ/user_dir/__init__.py\"\ncommand -v node-seq-prepare\n"
                                f"python -c \"{check}\"\n```\n")
    run_page(page, tmp_path / "work")
