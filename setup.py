"""node-seq: Neural-ODE sequence models for fairseq and HuggingFace Transformers."""

from setuptools import find_packages, setup

HF = ["transformers>=5,<6", "datasets>=4", "tokenizers>=0.21", "safetensors>=0.4", "accelerate>=1.1"]
FAIRSEQ = ["fairseq-fixed==0.12.3.1", "sacrebleu>=2.4"]
VISION = ["torchvision==0.29.1", "scikit-learn>=1.3", "matplotlib>=3.7", "pyyaml>=6", "tqdm>=4"]
DEV = ["pytest>=8", "hypothesis>=6"]

setup(
    name="node-seq",
    version="0.1.0",
    description="Neural-ODE Transformers for fairseq and HuggingFace, and ODENet image classifiers",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["node_seq", "node_seq.*", "vision", "vision.*"]),
    install_requires=["torch>=2.6", "torchdiffeq==0.2.5", "numpy"],
    extras_require={
        "fairseq": FAIRSEQ,
        "hf": HF,
        "vision": VISION,
        "dev": DEV,
        "all": FAIRSEQ + HF + VISION + DEV,
    },
    entry_points={"console_scripts": ["node-seq-vision-train = vision.train:main"]},
)
