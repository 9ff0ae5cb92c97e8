"""Save node_seq.hf's configs, models and tokenizer as custom code that loads without node-seq.

transformers saves a class registered with ``register_for_auto_class`` by copying its module and the
modules that module imports with ``from .x import`` from the same folder (``custom_object_save``);
its loader resolves nothing else. node_seq.hf's modules import ``..nn``, ``..ode`` and ``..text``, so
that copy fails. Such a class here writes a *code bundle* instead: every node_seq module it needs, in
one folder under a flat name (``node_seq.nn.layers`` -> ``nn_layers.py``, ``node_seq.hf.X`` -> ``X.py``),
with each import of node_seq rewritten to the flat name. A name imported from a package
(``from ..ode import solve``) is followed through the package's ``__init__`` to the module that
defines it. The bundle is made from the package's own modules at save time, so it cannot drift from
them. Imports of other libraries (torch, transformers, torchdiffeq, tokenizers) stay as they are;
transformers' ``check_imports`` names any the receiver lacks.

A class loaded from a bundle lives in flat modules already, so transformers' own route saves it again.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import os
from pathlib import Path
from typing import Iterator

from transformers import PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

PACKAGE = "node_seq"
HF_PACKAGE = f"{PACKAGE}.hf"


class BundleError(ValueError):
    """A node_seq module imports node_seq in a way a flat folder of modules cannot express."""


def flat_name(module: str) -> str:
    """The bundle's name of a node_seq module: node_seq.hf's modules keep theirs (transformers writes
    ``auto_map`` from it), the others are named by their path (``node_seq.nn.layers`` -> ``nn_layers``)."""
    if module.startswith(HF_PACKAGE + "."):
        return module[len(HF_PACKAGE) + 1:].replace(".", "_")
    return module[len(PACKAGE) + 1:].replace(".", "_")


def auto_map_entry(cls: type) -> str:
    """``module.Class`` as ``auto_map`` names a bundled class (transformers' spelling)."""
    return f"{flat_name(cls.__module__)}.{cls.__name__}"


def _is_node_seq(module: str) -> bool:
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def _source(module: str) -> tuple[str, bool]:
    """The source text of ``module`` and whether it is a package (its ``__init__``)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise BundleError(f"{module} has no Python source to bundle")
    return Path(spec.origin).read_text(encoding="utf-8"), spec.submodule_search_locations is not None


def _imported_module(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute name of the module ``node`` (in ``importer``) imports from."""
    if node.level == 0:
        return node.module
    anchor = importer if is_package else importer.rpartition(".")[0]
    return importlib.util.resolve_name("." * node.level + (node.module or ""), anchor)


def _definition(module: str, name: str) -> tuple[str, str]:
    """The module that defines what ``from module import name`` binds, and its name there."""
    source, is_package = _source(module)
    if not is_package:
        return module, name
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    source = _imported_module(module, True, node)
                    if source == module:  # from . import name: a module (a bundle has no packages)
                        raise BundleError(f"{module}.{name} is a module: import names from it instead")
                    return _definition(source, alias.name)
    raise BundleError(f"{module} does not re-export {name!r} from a module (a bundle has no packages): "
                      f"import it from the module that defines it")


def _rewritten_import(importer: str, is_package: bool, node: ast.stmt) -> dict[str, list[str]] | None:
    """The names a node_seq import binds, by the module that defines them; None for other statements."""
    if isinstance(node, ast.Import):
        if any(_is_node_seq(alias.name) for alias in node.names):
            raise BundleError(f"{importer}, line {node.lineno}: 'import {PACKAGE}...' cannot be bundled; "
                              f"use 'from ... import name'")
        return None
    if not isinstance(node, ast.ImportFrom):
        return None
    source = _imported_module(importer, is_package, node)
    if not _is_node_seq(source):
        return None
    names: dict[str, list[str]] = {}
    for alias in node.names:
        if alias.name == "*":
            raise BundleError(f"{importer}, line {node.lineno}: 'import *' cannot be bundled")
        module, original = _definition(source, alias.name)
        bound = alias.asname or alias.name
        names.setdefault(module, []).append(original if original == bound else f"{original} as {bound}")
    return names


def bundled_source(module: str) -> tuple[str, set[str]]:
    """``module``'s source with each node_seq import rewritten to ``from .flat import ...`` (one line per
    defining module, in the statement's place), and the node_seq modules it imports."""
    source, is_package = _source(module)
    lines = source.splitlines(keepends=True)
    replacements, imported = [], set()
    for node in ast.walk(ast.parse(source)):
        names = _rewritten_import(module, is_package, node)
        if names is None:
            continue
        first, last = lines[node.lineno - 1], lines[node.end_lineno - 1]
        indent, rest = first[:node.col_offset], last[node.end_col_offset:]
        if indent.strip() or not (rest.strip() == "" or rest.strip().startswith("#")):
            raise BundleError(f"{module}, line {node.lineno}: an import of {PACKAGE} must have its lines to itself")
        new = [f"{indent}from .{flat_name(name)} import {', '.join(bound)}" for name, bound in names.items()]
        replacements.append((node.lineno - 1, node.end_lineno, "\n".join(new) + rest))
        imported.update(names)
    for start, stop, text in sorted(replacements, reverse=True):
        lines[start:stop] = [text]
    return "".join(lines), imported


def bundle(modules: list[str]) -> dict[str, str]:
    """File name -> source of the bundle of ``modules`` (node_seq module names) and all they import."""
    files: dict[str, str] = {}
    owners: dict[str, str] = {}
    todo = list(modules)
    while todo:
        module = todo.pop()
        name = f"{flat_name(module)}.py"
        if owners.setdefault(name, module) != module:
            raise BundleError(f"{owners[name]} and {module} would both be {name} in the bundle")
        if name not in files:
            files[name], imported = bundled_source(module)
            todo.extend(imported)
    return dict(sorted(files.items()))


def write_bundle(folder: str | os.PathLike, modules: list[str]) -> list[Path]:
    """Write the bundle of ``modules`` into ``folder``; the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, source in bundle(modules).items():
        (folder / name).write_text(source, encoding="utf-8")
        written.append(folder / name)
    return written


# ----------------------------------------------------------------------------------------------
# save_pretrained


class SavesCodeBundle:
    """Mixin of node_seq.hf's configs, models and tokenizer, first among their bases.

    Registered for an Auto class (``register_for_auto_class``), ``save_pretrained`` writes the code
    bundle of the object's module and points ``auto_map`` at it, where transformers would copy the
    module alone and fail on its ``..`` imports. A model's ``auto_map`` also gets ``AutoConfig``
    (the folder cannot load without it; its module is in the bundle anyway).
    """

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        cls = type(self)
        if cls._auto_class is None or not cls.__module__.startswith(HF_PACKAGE + "."):
            return super().save_pretrained(save_directory, *args, **kwargs)  # not custom code, or a bundle's own
        if kwargs.get("push_to_hub"):
            # transformers uploads only the files its own save changed: the bundle would be left behind.
            raise ValueError(f"{cls.__name__}.save_pretrained(push_to_hub=True) would upload the folder without "
                             f"its code: call save_pretrained(folder), then push_to_hub(repo_id) or "
                             f"'hf upload repo_id folder'")
        write_bundle(save_directory, [cls.__module__])
        _point_auto_map_at_bundle(self)
        with _auto_class_set(cls, None):  # transformers' own copy of the module would fail
            return super().save_pretrained(save_directory, *args, **kwargs)


def _point_auto_map_at_bundle(obj: PreTrainedConfig | PreTrainedModel | PreTrainedTokenizerBase) -> None:
    """Add ``obj``'s Auto class -> its bundled class to the ``auto_map`` its ``save_pretrained`` writes."""
    if isinstance(obj, PreTrainedConfig):
        obj.auto_map = {**(getattr(obj, "auto_map", None) or {}), obj._auto_class: auto_map_entry(type(obj))}
    elif isinstance(obj, PreTrainedModel):
        config = obj.config
        config.auto_map = {"AutoConfig": auto_map_entry(type(config)), **(getattr(config, "auto_map", None) or {}),
                           obj._auto_class: auto_map_entry(type(obj))}
    else:  # a fast tokenizer: (slow class, fast class), in tokenizer_config.json
        obj._auto_map = {**(getattr(obj, "_auto_map", None) or {}), obj._auto_class: [None, auto_map_entry(type(obj))]}


@contextlib.contextmanager
def registered_for_auto_classes(model: PreTrainedModel, auto_class: str,
                                tokenizer: PreTrainedTokenizerBase) -> Iterator[None]:
    """``model``'s config, ``model`` (for ``auto_class``) and ``tokenizer`` registered inside only, as
    ``register_for_auto_class`` registers them: their ``save_pretrained`` writes the code bundle."""
    with (_auto_class_set(type(model.config), "AutoConfig"), _auto_class_set(type(model), auto_class),
          _auto_class_set(type(tokenizer), "AutoTokenizer")):
        yield


@contextlib.contextmanager
def _auto_class_set(cls: type, auto_class: str | None) -> Iterator[None]:
    """``cls._auto_class`` set inside, as it was after.

    The class, not the instance: a model asks ``cls.is_remote_code()``. ``_auto_class`` may be
    inherited (registered on a base class), so it is shadowed, then the shadow removed.
    """
    own = cls.__dict__.get("_auto_class", _ABSENT)
    cls._auto_class = auto_class
    try:
        yield
    finally:
        if own is _ABSENT:
            del cls._auto_class
        else:
            cls._auto_class = own


_ABSENT = object()
