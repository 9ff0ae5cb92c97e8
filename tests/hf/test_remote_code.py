"""Sharing a model as custom code: ``register_for_auto_class`` + ``save_pretrained`` write a flat code
bundle made from node_seq's own modules, and a process that cannot import node_seq loads it with the
Auto classes (``trust_remote_code=True``), generates the installed model's tokens, and saves it again."""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hf_helpers import tiny_lm, tiny_model
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer
from transformers.dynamic_module_utils import get_relative_import_files

from node_seq.hf import NodeTransformerConfig, NodeTransformerForConditionalGeneration, NodeTransformerTokenizerFast
from node_seq.hf.remote_code import BundleError, bundle, bundled_source, flat_name
from node_seq.hf.tokenization_node_transformer import LANGUAGE_MODEL, SEQ2SEQ, build_tokenizer
from node_seq.text.tokenizer import train_tokenizer

HERE = Path(__file__).resolve().parent
KINDS = {"seq2seq": ("AutoModelForSeq2SeqLM", SEQ2SEQ, ["3 is 21 and", "12 is not 15"]),
         "lm": ("AutoModelForCausalLM", LANGUAGE_MODEL, ["5 is", "17 and not 20 is"])}
MAX_NEW_TOKENS = 6


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Each kind's model and tokenizer, saved by the standard route with every class registered (and
    unregistered again afterwards), and the installed model's generated tokens."""
    root = tmp_path_factory.mktemp("remote_code")
    text = root / "text.txt"
    text.write_text("".join(f"{i} is {i * 7} and not {i + 3}\n" for i in range(300)))
    tokenizer_json = json.loads(train_tokenizer([text], vocab_size=40).to_str())
    out = {}
    with pytest.MonkeyPatch.context() as patch:
        for kind, (auto, tokenizer_kind, texts) in KINDS.items():
            model = (tiny_model if kind == "seq2seq" else tiny_lm)(node_method="rk4")
            tokenizer = build_tokenizer(tokenizer_json, kind=tokenizer_kind)
            for obj in (model.config, model, tokenizer):
                patch.setattr(type(obj), "_auto_class", None)  # unregistered when the fixture ends
            model.config.register_for_auto_class()
            model.register_for_auto_class(auto)
            tokenizer.register_for_auto_class()
            folder = root / kind
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            batch = tokenizer(texts, return_tensors="pt", padding=True)
            with torch.no_grad():
                generated = model.generate(**batch, num_beams=4, use_cache=True, do_sample=False,
                                           max_new_tokens=MAX_NEW_TOKENS, return_dict_in_generate=True,
                                           output_scores=True)
            out[kind] = dict(folder=folder, auto=auto, texts=texts, input_ids=batch["input_ids"].tolist(),
                             tokens=generated.sequences.tolist(), scores=generated.sequences_scores, model=model)
    return out


@pytest.fixture(scope="module")
def without_node_seq(shared, tmp_path_factory):
    """tests/hf/load_bundle.py's results: the bundles loaded in ``python -I`` with node_seq blocked,
    run from an empty folder, HF caches in tmp, no PYTHONPATH."""
    root = tmp_path_factory.mktemp("child")
    requests = [dict(auto=run["auto"], folder=str(run["folder"]), texts=run["texts"], max_new_tokens=MAX_NEW_TOKENS,
                     resave=str(root / f"{kind}-again")) for kind, run in shared.items()]
    (root / "requests.json").write_text(json.dumps(requests))
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "HF_"))}
    env.update(HF_HOME=str(root / "hf_home"), HF_MODULES_CACHE=str(root / "modules"), HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS="1")
    work = root / "cwd"
    work.mkdir()
    subprocess.run([sys.executable, "-I", str(HERE / "load_bundle.py"), str(root / "requests.json"),
                    str(root / "results.json")], cwd=work, env=env, check=True, timeout=300)
    results = json.loads((root / "results.json").read_text())
    return dict(zip(shared, results.pop("results")), **results, root=root)


@pytest.mark.slow
def test_the_loading_process_could_not_import_node_seq(without_node_seq):
    assert without_node_seq["node_seq_importable"] is False
    assert without_node_seq["node_seq_modules"] == []


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_the_bundle_generates_the_installed_models_tokens_without_node_seq(kind, shared, without_node_seq):
    loaded = without_node_seq[kind]
    assert loaded["model_module"].startswith("transformers_modules.")
    assert loaded["tokenizer_module"].startswith("transformers_modules.")
    assert loaded["input_ids"] == shared[kind]["input_ids"]
    assert loaded["tokens"] == shared[kind]["tokens"]
    torch.testing.assert_close(torch.tensor(loaded["scores"]), shared[kind]["scores"])


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_a_model_loaded_from_the_bundle_saves_and_loads_again(kind, shared, without_node_seq):
    loaded = without_node_seq[kind]
    assert loaded["tokens_again"] == shared[kind]["tokens"]
    again = without_node_seq["root"] / f"{kind}-again"
    assert {p.name for p in again.glob("*.py")} == {p.name for p in shared[kind]["folder"].glob("*.py")}


def _top_level_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


@pytest.mark.parametrize("kind", KINDS)
def test_every_import_of_the_bundle_resolves_inside_it(kind, shared):
    folder = shared[kind]["folder"]
    trees = {path.stem: ast.parse(path.read_text()) for path in folder.glob("*.py")}
    for module, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1 and node.module in trees, (module, ast.unparse(node))
                assert {alias.name for alias in node.names} <= _top_level_names(trees[node.module]), module
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                imported = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(name.split(".")[0] == "node_seq" for name in imported), (module, ast.unparse(node))
        get_relative_import_files(folder / f"{module}.py")  # transformers' own walk finds every file
    config = json.loads((folder / "config.json").read_text())
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    entries = [*config["auto_map"].values(), *filter(None, tokenizer_config["auto_map"]["AutoTokenizer"])]
    assert set(config["auto_map"]) == {"AutoConfig", shared[kind]["auto"]}
    for entry in entries:
        module, name = entry.split(".")
        assert name in _top_level_names(trees[module])


class _WithoutNodeSeqImports(ast.NodeTransformer):
    def visit_ImportFrom(self, node):
        return None if node.level or (node.module or "").split(".")[0] == "node_seq" else node


@pytest.mark.slow
def test_the_bundle_is_the_packages_modules_with_only_their_imports_rewritten():
    """Outside its imports each file is its module, and each rewritten import binds the very object
    the module's own import binds."""
    files = bundle(["node_seq.hf.modeling_node_transformer_lm", "node_seq.hf.tokenization_node_transformer"])
    modules = {flat_name(name): name for name in _node_seq_modules()}
    assert set(files) <= {f"{flat}.py" for flat in modules}
    for file, source in files.items():
        module = importlib.import_module(modules[file[:-3]])
        original = ast.parse(Path(module.__file__).read_text())
        bundled = ast.parse(source)
        assert ast.dump(_WithoutNodeSeqImports().visit(bundled)) == ast.dump(_WithoutNodeSeqImports().visit(original))
        tree = ast.parse(source)
        typing_only = {id(node) for guard in ast.walk(tree) if isinstance(guard, ast.If)
                       and ast.unparse(guard.test) == "TYPE_CHECKING" for node in ast.walk(guard)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                defining = importlib.import_module(modules[node.module])
                for alias in node.names:
                    if id(node) in typing_only:  # not bound at run time: it must only resolve
                        assert hasattr(defining, alias.name), (file, alias.name)
                        continue
                    assert getattr(defining, alias.name) is getattr(module, alias.asname or alias.name), (file, alias.name)


def _node_seq_modules() -> list[str]:
    root = Path(importlib.import_module("node_seq").__file__).parent
    return [".".join(("node_seq", *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
            for path in root.rglob("*.py")]


def test_where_node_seq_is_imported_its_classes_load_a_bundle(shared, tmp_path, monkeypatch):
    """node_seq registers its classes with the Auto classes: they load the folder, its code is not imported."""
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))  # where remote code would go
    folder = shared["seq2seq"]["folder"]
    assert type(AutoConfig.from_pretrained(folder)) is NodeTransformerConfig
    assert type(AutoModelForSeq2SeqLM.from_pretrained(folder)) is NodeTransformerForConditionalGeneration
    assert type(AutoTokenizer.from_pretrained(folder)) is NodeTransformerTokenizerFast
    assert not (tmp_path / "modules").exists()


def test_where_node_seq_is_imported_trusting_the_bundle_takes_only_its_tokenizer(shared, tmp_path, monkeypatch):
    """transformers prefers a config and model class registered in the process to trusted remote code,
    but not a tokenizer class registered through its config: the tokenizer is the bundle's, and
    encodes as the installed one does."""
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))  # not the user's cache
    monkeypatch.setattr(sys, "path", list(sys.path))  # transformers appends the cache to it
    before = set(sys.modules)
    folder = shared["seq2seq"]["folder"]
    try:
        assert type(AutoConfig.from_pretrained(folder, trust_remote_code=True)) is NodeTransformerConfig
        model = AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True)
        assert type(model) is NodeTransformerForConditionalGeneration
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
        assert type(tokenizer).__module__.startswith("transformers_modules.")
        assert tokenizer(shared["seq2seq"]["texts"], padding=True)["input_ids"] == shared["seq2seq"]["input_ids"]
    finally:
        for name in set(sys.modules) - before:
            del sys.modules[name]  # the bundle's modules, imported from tmp_path


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """A fairseq LM checkpoint (two updates) and its data folder."""
    from lm_helpers import make_lm_data, train_lm

    root = tmp_path_factory.mktemp("lm_run")
    data = make_lm_data(root, train_size=100)
    return train_lm(data, root / "checkpoints", updates=2), data


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_the_converters_remote_code_option_writes_the_bundle_of_the_standard_route(kind, shared, request, tmp_path):
    if kind == "seq2seq":
        from node_seq.hf.convert import main

        run = request.getfixturevalue("trained_run")
        checkpoint, data = run.checkpoint, run.bin
    else:
        from node_seq.hf.convert_lm import main

        checkpoint, data = request.getfixturevalue("lm_run")
    main(["--checkpoint", str(checkpoint), "--data-bin", str(data), "--out", str(tmp_path), "--remote-code"])
    standard = shared[kind]["folder"]
    assert {p.name: p.read_text() for p in tmp_path.glob("*.py")} == {p.name: p.read_text() for p in standard.glob("*.py")}
    for name in ("config.json", "tokenizer_config.json"):
        assert json.loads((tmp_path / name).read_text())["auto_map"] == json.loads((standard / name).read_text())["auto_map"]
    model_class = type(shared[kind]["model"])
    assert (model_class._auto_class, model_class.config_class._auto_class, NodeTransformerTokenizerFast._auto_class) \
        == (None, None, None)  # registered while saving only


def test_an_unregistered_model_saves_no_code(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    assert not list(tmp_path.glob("*.py"))
    assert "auto_map" not in json.loads((tmp_path / "config.json").read_text())


def test_push_to_hub_from_save_pretrained_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    model = tiny_model()
    monkeypatch.setattr(type(model), "_auto_class", None)
    model.register_for_auto_class("AutoModelForSeq2SeqLM")
    with pytest.raises(ValueError, match=r"push_to_hub=True.*then push_to_hub\(repo_id\)"):
        model.save_pretrained(tmp_path / "out", push_to_hub=True)
    assert not (tmp_path / "out").exists()


@pytest.fixture
def module_of_node_seq_hf(tmp_path, monkeypatch):
    """Write a module that imports as ``node_seq.hf.<name>`` (from tmp_path), for the rewrite's edge cases."""
    import node_seq.hf

    monkeypatch.setattr(node_seq.hf, "__path__", [*node_seq.hf.__path__, str(tmp_path)])

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(source)
        importlib.invalidate_caches()
        return f"node_seq.hf.{name}"

    return write


def test_imports_are_rewritten_in_place_wherever_they_are(module_of_node_seq_hf):
    module = module_of_node_seq_hf("edge_cases", (
        "from ..ode import (\n    SolveStats as Stats,  # a comment inside\n    solve,\n)  # kept\n"
        "def f():\n    from ..nn.layers import LayerSpec\n    return LayerSpec\n"
        "from node_seq.ode.config import SolverConfig\n"))
    source, imported = bundled_source(module)
    assert source == ("from .ode_stats import SolveStats as Stats\nfrom .ode_solve import solve  # kept\n"
                      "def f():\n    from .nn_layers import LayerSpec\n    return LayerSpec\n"
                      "from .ode_config import SolverConfig\n")
    assert imported == {"node_seq.ode.stats", "node_seq.ode.solve", "node_seq.nn.layers", "node_seq.ode.config"}


@pytest.mark.parametrize("source, message", [
    ("import node_seq.ode\n", r"line 1: 'import node_seq...' cannot be bundled"),
    ("from ..ode import *\n", r"line 1: 'import \*' cannot be bundled"),
    ("x = 1; from ..ode import solve\n", r"line 1: an import of node_seq must have its lines to itself"),
    ("from ..ode import fixed_grid\n", r"node_seq.ode does not re-export 'fixed_grid'"),
    ("from .. import ode\n", r"node_seq.ode is a module: import names from it instead"),
])
def test_an_import_a_flat_folder_cannot_express_is_refused(source, message, module_of_node_seq_hf):
    with pytest.raises(BundleError, match=message):
        bundled_source(module_of_node_seq_hf("bad", source))


def test_two_modules_with_one_flat_name_are_refused(module_of_node_seq_hf):
    module = module_of_node_seq_hf("nn_linear", "from ..nn.linear import XavierLinear\n")
    with pytest.raises(BundleError, match=r"node_seq.hf.nn_linear and node_seq.nn.linear would both be nn_linear.py"):
        bundle([module])


@pytest.mark.parametrize("registered_on", ["model class", "base class"])
def test_saving_leaves_the_registration_as_it_was(registered_on, tmp_path, monkeypatch):
    from node_seq.hf.modeling_node_transformer import NodeTransformerPreTrainedModel

    model = tiny_model()
    owner = type(model) if registered_on == "model class" else NodeTransformerPreTrainedModel
    monkeypatch.setattr(owner, "_auto_class", None)
    owner.register_for_auto_class("AutoModelForSeq2SeqLM")
    own = {cls: cls.__dict__.get("_auto_class", "absent") for cls in (type(model), NodeTransformerPreTrainedModel)}
    model.save_pretrained(tmp_path)
    assert {cls: cls.__dict__.get("_auto_class", "absent") for cls in own} == own
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"]["AutoModelForSeq2SeqLM"] == \
        "modeling_node_transformer.NodeTransformerForConditionalGeneration"
