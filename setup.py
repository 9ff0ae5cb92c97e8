"""node-seq: Neural-ODE sequence models for fairseq and HuggingFace Transformers."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent

# Ranges for `pip install node-seq[...]` into an environment of one's own. Lower bounds: the oldest
# versions tested (the exact set the project is tested with is constraints.txt); upper bounds: the next
# major release, or the first release known to break (transformers < 5.24 passes the decoder cache as
# `past_key_values`, which this model no longer reads).
# Each feature's extra brings everything its modules import (tests/test_packaging.py checks it):
# the HF models and their training (BLEU through sacrebleu); the fairseq plugin with the text pipeline
# that feeds it (node_seq.text: the BPE through tokenizers, fairseq-preprocess, sacrebleu scoring).
TOKENIZERS, SACREBLEU = "tokenizers>=0.23.1,<0.24", "sacrebleu>=2.6,<3"
HF = ["transformers>=5.24,<6", "huggingface_hub>=2.4,<3", "datasets>=5.2,<6", TOKENIZERS, "safetensors>=0.8,<1",
      "accelerate>=1.15,<2", "peft>=0.21,<0.22", SACREBLEU]
FAIRSEQ = ["fairseq-fixed==0.12.3.1", TOKENIZERS, SACREBLEU]
VISION = ["torchvision>=0.29,<1", "scikit-learn>=1.9,<2", "matplotlib>=3.11,<4", "pyyaml>=6,<7", "tqdm>=4.70,<5"]
# The conversion tests build their own sentencepiece model and subword-nmt codes with the real tools.
# tests/test_wheel.py builds the release with `python -m build`.
DEV = ["pytest>=9,<10", "hypothesis>=6.170,<7", "sentencepiece>=0.2.3,<0.3", "subword-nmt>=0.3.8,<0.4", "build>=1.6,<2"]
# The documentation site (mkdocs.yml): tests/test_docs_site.py builds it with `mkdocs build --strict`.
DOCS = ["mkdocs>=1.6.1,<2", "mkdocs-material>=9.8,<10", "mkdocstrings>=1.0.8,<2", "mkdocstrings-python>=2.0.11,<3"]
# The repository's vision/ folder installs as node_seq_vision: a top-level `vision` in site-packages would
# shadow (or be shadowed by) any other distribution's `vision`. From a checkout, `python -m vision.train` works.
VISION_PACKAGE = "node_seq_vision"
# The one place the version is written: node_seq.__version__, read here as text (importing node_seq needs torch).
VERSION = re.search(r'^__version__ = "([^"]+)"$', (HERE / "node_seq" / "__init__.py").read_text(encoding="utf-8"),
                    re.MULTILINE).group(1)
# Every command of the project; each module also runs as `python -m <module>` (what scripts/*.sh call).
CONSOLE_SCRIPTS = [
    "node-seq-numbers = node_seq.text.numbers:main",
    "node-seq-prepare = node_seq.text.prepare:main",
    "node-seq-prepare-lm = node_seq.text.prepare_lm:main",
    "node-seq-score = node_seq.text.score:main",
    "node-seq-train-hf = node_seq.hf.cli.train:cli",
    "node-seq-train-hf-lm = node_seq.hf.cli.train_lm:cli",
    "node-seq-convert = node_seq.hf.cli.convert:main",
    "node-seq-convert-lm = node_seq.hf.cli.convert_lm:main",
    "node-seq-translate = node_seq.hf.cli.translate:main",
    "node-seq-elastic-lm = node_seq.fairseq.elastic_lm:main",
    f"node-seq-vision-train = {VISION_PACKAGE}.train:main",
    f"node-seq-vision-evaluate = {VISION_PACKAGE}.evaluate:main",
    f"node-seq-vision-memory = {VISION_PACKAGE}.memory:main",
]

setup(
    name="node-seq",
    version=VERSION,
    description="Neural-ODE Transformers for fairseq and HuggingFace, and ODENet image classifiers",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["node_seq", "node_seq.*"])
    + [VISION_PACKAGE] + [f"{VISION_PACKAGE}.{package}" for package in find_packages(where=str(HERE / "vision"))],
    package_dir={VISION_PACKAGE: "vision"},
    install_requires=["torch>=2.14,<3", "torchdiffeq==0.2.5", "numpy>=2.4,<3"],
    extras_require={
        "fairseq": FAIRSEQ,
        "hf": HF,
        "vision": VISION,
        "dev": DEV,
        "docs": DOCS,
        "all": sorted(set(FAIRSEQ + HF + VISION + DEV + DOCS)),
    },
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
)
