"""The site's generated pages: the home page (README.md), the option, method, command and API
references, the results pages (:mod:`benchmarks.pages`) and the changelog.

They are written into each build from the code (never committed), so they cannot drift from it:
options from :class:`node_seq.nn.NodeOptions`, methods from :data:`node_seq.ode.REGISTRY`,
commands from setup.py's console scripts and each one's own ``--help``. mkdocs.yml names this
file under ``hooks:``; ``tests/test_docs_site.py`` calls the page functions directly too.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import inspect
import io
import logging
import os
import re
import runpy
import sys
from pathlib import Path
from typing import Any
from unittest import mock

REPO = Path(__file__).resolve().parents[1]


def _repo_importable() -> None:
    """Document this checkout's code (and find `vision` and `benchmarks`, which are not installed under
    those names); MkDocs restores sys.path after loading a hook, so events call this again."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


_repo_importable()

from node_seq.nn import options as schema  # noqa: E402
from node_seq.ode import REGISTRY, OptionError  # noqa: E402

#: The front ends that spell the options their own way, with the names users know them by
#: (the language models' front ends spell them as these do).
SPELLINGS = {schema.FAIRSEQ: "fairseq-train", schema.HF: "HF config", schema.TRAIN_HF: "node-seq-train-hf",
             schema.VISION: "vision config key, flag"}
LANGUAGE_MODELS = tuple(schema.SPELLED_LIKE)


def _code(value: Any) -> str:
    return f"`{value}`"


def _type_name(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def _default(option: schema.Option) -> str:
    if option.base_type is tuple:
        return _code(schema.format_time_points(option.default))
    return _code(option.default)


def _spelled(option: schema.Option, front_end: str) -> str:
    """How ``front_end`` spells ``option``; the vision config's key and its command-line override both."""
    if front_end not in option.front_ends:
        return "-"
    if front_end == schema.VISION:
        return f"{_code(option.spelled(front_end, attribute=True))}, {_code(option.spelled(front_end))}"
    return _code(option.spelled(front_end))


def option_page() -> str:
    """Every NODE option: its spelling per front end, type, default, allowed values and help."""
    header = ["option", *SPELLINGS.values(), "language models", "type", "default"]
    rows = []
    for option in schema.OPTIONS.values():
        spelled = [_spelled(option, front_end) for front_end in SPELLINGS]
        models = ", ".join(front_end for front_end in LANGUAGE_MODELS if front_end in option.front_ends) or "-"
        rows.append([f"[{_code(option.name)}](#{option.name})", *spelled, models, _code(_type_name(option.type)),
                     _default(option)])
    sections = []
    for option in schema.OPTIONS.values():
        choices = f"\n\nAllowed values: {', '.join(map(_code, option.choices))}." if option.choices else ""
        sections.append(f"## {option.name}\n\n{option.help}.{choices}\n")
    return "\n".join([
        "# Option reference",
        "",
        "Generated from `node_seq.nn.NodeOptions` (`node_seq/nn/options.py`), the one description every front end's "
        "options are made from; a value is refused with the same words everywhere, naming the option as that front "
        "end spells it. `-`: the front end does not expose it (the default applies). The language models' front "
        "ends (fairseq_lm, hf_lm, train_hf_lm) spell an option as their sequence-to-sequence counterparts do. "
        "`python -m node_seq.fairseq.options` lists fairseq-train's flags with their defaults.",
        "",
        _table(header, rows),
        "",
        *sections,
    ])


def accepting_front_ends(name: str) -> list[str]:
    """The front ends whose options accept method ``name`` (with its first gradient mode): the
    option check decides, so this page says what the code does."""
    method = REGISTRY[name]
    accepted = []
    for front_end in schema.FRONT_ENDS:
        try:
            schema.NodeOptions(method=name, gradient=method.gradients[0]).check(front_end)
        except OptionError:
            continue
        accepted.append(front_end)
    return accepted


def _front_ends(names: list[str]) -> str:
    return "all" if tuple(names) == schema.FRONT_ENDS else ", ".join(names) or "none"


def method_page() -> str:
    """Every registered method: kind, order, stages, gradient modes and the front ends that take it."""
    header = ["method", "kind", "order", "stages", "gradients", "fallback", "front ends", "what"]
    rows = [[_code(m.name), m.kind, "-" if m.order is None else str(m.order), str(m.stages),
             ", ".join(map(_code, m.gradients)), "yes" if m.fallback else "-",
             _front_ends(accepting_front_ends(m.name)), m.summary] for m in REGISTRY.values()]
    refusals = [f"- {_code(m.name)}, {_code(mode)}: {reason}" for m in REGISTRY.values()
                for mode, reason in m.refusals.items()]
    return "\n".join([
        "# Method reference",
        "",
        "Generated from the method registry, `node_seq.ode.REGISTRY` (`node_seq/ode/methods.py`); "
        "`node_seq.ode.register` adds a method to it, and to this page. Kind: `fixed` (a uniform grid of `steps`), "
        "`learned` (a fixed grid whose step mixes its stages with the layer's learned coefficients; order `-`: "
        "the coefficients decide it) or `adaptive` (error control with `rtol`/`atol`). Stages: field evaluations "
        "per step. Fallback: a failed solve may be redone with it (`failure_policy`). Front ends: those whose "
        "options accept it.",
        "",
        _table(header, rows),
        "",
        "## Refusals",
        "",
        "Gradient modes a method refuses for a reason of its own, in the words of the error:",
        "",
        *refusals,
        "",
    ])


def console_scripts() -> dict[str, tuple[str, str]]:
    """``command -> (module, function)`` from setup.py's console scripts, the module named as this checkout imports it
    (setup.py's ``package_dir`` installs the folder ``vision`` as ``node_seq_vision``)."""
    captured: dict = {}
    with mock.patch("setuptools.setup", side_effect=lambda **kwargs: captured.update(kwargs)):
        runpy.run_path(str(REPO / "setup.py"))
    commands = {}
    for entry in captured["entry_points"]["console_scripts"]:
        name, target = (part.strip() for part in entry.split("="))
        module = target.split(":")[0]
        package, _, rest = module.partition(".")
        commands[name] = (".".join([captured["package_dir"].get(package, package), rest]), target.split(":")[1])
    return commands


def help_text(name: str, module: str, function: str) -> str:
    """What ``COMMAND --help`` prints, at a fixed width so that the page does not depend on the terminal."""
    logger = logging.getLogger()
    level, handlers = logger.level, logger.handlers[:]
    try:  # importing fairseq's modules configures the root logger; the build's log stays mkdocs'
        command = getattr(importlib.import_module(module), function)
    finally:
        logger.setLevel(level)
        logger.handlers[:] = handlers
    out = io.StringIO()
    with mock.patch.dict(os.environ, {"COLUMNS": "100"}), mock.patch.object(sys, "argv", [name]), \
            contextlib.redirect_stdout(out):
        try:
            command(["--help"])
        except SystemExit:
            pass
    return out.getvalue().rstrip()


def command_page() -> str:
    """Every console script with its ``--help``."""
    sections = [f"## {name}\n\n`python -m {module}` from a checkout.\n\n```text\n{help_text(name, module, function)}\n```\n"
                for name, (module, function) in console_scripts().items()]
    return "\n".join([
        "# Command reference",
        "",
        "Generated from setup.py's console scripts: each command's own `--help`. `pip install` puts the commands "
        "in the environment's `bin/`; each also runs as `python -m MODULE` (the form the shell recipes use). "
        "What each is for: [Commands](../guides/commands.md).",
        "",
        *sections,
    ])


#: Files outside docs/ that the home page shows (README.md's picture), copied into the build where README has them.
PICTURES = ("benchmarks/results/elastic_depth_multi30k.png",)


def landing_page() -> str:
    """README.md, its links made the site's: ``docs/x.md`` -> ``x.md``, CHANGELOG.md -> the changelog page,
    a picture stays (it is copied into the build), any other file from the repository root."""
    def link(match: re.Match) -> str:
        target = match.group(2)
        if target.startswith(("http", "#")) or target in PICTURES:
            return match.group(0)
        if target == "CHANGELOG.md":
            return f"{match.group(1)}(changelog.md)"
        if target.startswith("docs/"):
            return f"{match.group(1)}({target.removeprefix('docs/')})"
        return f"{match.group(1)}(/{target})"
    return re.sub(r"(\[[^\]]*\])\(([^)\s]+)\)", link, (REPO / "README.md").read_text(encoding="utf-8"))


#: The packages whose public names get an API page (mkdocstrings renders their docstrings).
API = ("node_seq.ode", "node_seq.nn", "node_seq.hf")


def api_page(package: str) -> str:
    """mkdocstrings' directive for ``package`` with the names it re-exports (``from .x import Y as Y``),
    which mkdocstrings would otherwise take for private imports. A name its submodule shadows for
    mkdocstrings (``node_seq.ode.solve``, the function and the module) gets a directive of its own."""
    names = {name: value for name, value in vars(importlib.import_module(package)).items()
             if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"}
    shadowed = {name for name in names if importlib.util.find_spec(f"{package}.{name}") is not None}
    members = "".join(f"\n        - {name}" for name in names if name not in shadowed)
    own = "".join(f"\n::: {names[name].__module__}.{names[name].__qualname__}\n" for name in sorted(shadowed))
    return f"# {package}\n\n::: {package}\n    options:\n      members:{members}\n{own}"


def changelog_page() -> str:
    return (REPO / "CHANGELOG.md").read_text(encoding="utf-8")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


#: Page -> what writes it, in the build's docs folder.
PAGES = {"index.md": landing_page, "reference/options.md": option_page, "reference/methods.md": method_page,
         "reference/commands.md": command_page, "changelog.md": changelog_page,
         **{f"reference/api/{package.rpartition('.')[2]}.md": functools.partial(api_page, package) for package in API}}


# ---------------------------------------------------------------------------------------------
# the MkDocs hook
# ---------------------------------------------------------------------------------------------

def on_config(config: Any) -> Any:
    """Write the results pages (benchmarks.pages, from benchmarks/results/*.json) into docs/results/,
    where git ignores them, and give the nav's Results section one entry per page."""
    _repo_importable()
    from benchmarks.pages import TOPICS, write_results_pages

    write_results_pages(Path(config["docs_dir"]) / "results")
    results = [{"Overview": "results/index.md"}, *({topic.title: f"results/{topic.slug}.md"} for topic in TOPICS),
               {"Archive": "results/archive.md"}]
    config["nav"] = [{"Results": results} if isinstance(entry, dict) and "Results" in entry else entry
                     for entry in config["nav"]]
    return config


def on_files(files: Any, config: Any) -> Any:
    """Add the generated pages to the build (mkdocs.yml's nav names them)."""
    from mkdocs.structure.files import File

    for path, write in PAGES.items():
        files.append(File.generated(config, path, content=write()))
    for path in PICTURES:
        files.append(File(path, str(REPO), config["site_dir"], config["use_directory_urls"]))
    return files

