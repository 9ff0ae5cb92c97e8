"""Datasets for the vision models, all held in memory as tensors.

* ``spheres2/3/10``: concentric spheres ("ResNet After All?", after Dupont et al.): an inner ball
  and an outer shell labelled 0, the shell between them labelled 1. Generated from ``data_seed``
  (the original generated them unseeded), so every run sees the same points.
* ``digits``: scikit-learn's bundled 8x8 digits (offline, real, 1797 images).
* ``mnist``, ``cifar10``, ``cifar100``: read from ``data_dir`` in their standard distribution
  formats (idx ubyte files, gzipped or not; CIFAR python pickles). Nothing is downloaded unless
  ``download=True``. CIFAR pickles are read by an unpickler that builds only dicts, lists, bytes
  and numpy arrays, so a tampered file cannot run code.

Batches are drawn by index with an explicit ``torch.Generator`` (shuffling and augmentation), whose
state a checkpoint saves: a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib
import io
import os
import pickle
import struct
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

DATASETS = ("spheres2", "spheres3", "spheres10", "digits", "mnist", "cifar10", "cifar100")
SPHERE_SHELLS = ((0.10, 0.15, 0), (0.25, 0.30, 1), (0.40, 0.45, 0))  # (r_min, r_max, label)


class DataError(ValueError):
    """A dataset is missing or malformed; the message names the file and what is wrong."""


@dataclasses.dataclass
class Split:
    x: torch.Tensor  # uint8 images (N, C, H, W), float images, or float vectors (N, dim)
    y: torch.Tensor  # int64 labels (N,)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: torch.Tensor) -> "Split":
        return Split(self.x[index], self.y[index])


@dataclasses.dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    val: Split | None
    input_shape: tuple[int, ...]
    num_classes: int
    mean: torch.Tensor  # per channel, from the training split; applied after scaling uint8 to [0, 1]
    std: torch.Tensor
    crop_padding: int = 0  # augmentation: random crop with this padding
    flip: bool = False  # augmentation: random horizontal flip

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """A batch as float network input: uint8 scaled to [0, 1], then standardized."""
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if x.dim() == 4:
            x = (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)
        return x


def batches(split: Split, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        index = order[start:start + batch_size]
        yield split.x[index], split.y[index]


def augment(x: torch.Tensor, *, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop (zero padding, i.e. the mean after standardizing) and horizontal flip of a batch."""
    n, c, h, w = x.shape
    if padding:
        padded = F.pad(x, (padding, padding, padding, padding))
        top = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        left = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        rows = (top[:, None] + torch.arange(h))[:, None, :, None]  # (n, 1, h, 1)
        cols = (left[:, None] + torch.arange(w))[:, None, None, :]  # (n, 1, 1, w)
        x = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    if flip:
        mask = torch.rand(n, generator=generator) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


# ---------------------------------------------------------------------------------------------
# concentric spheres and digits (no files)
# ---------------------------------------------------------------------------------------------

def concentric_spheres(dim: int, n: int, generator: torch.Generator) -> Split:
    """``n`` points: a quarter in the inner ball, half in the middle shell, a quarter in the outer."""
    counts = (n // 4, n - 2 * (n // 4), n // 4)
    xs, ys = [], []
    for (r_min, r_max, label), count in zip(SPHERE_SHELLS, counts):
        direction = torch.randn(count, dim, generator=generator)
        direction = direction / direction.norm(dim=1, keepdim=True)
        # r = r_min + (r_max - r_min) * U^(1/dim), the radius law of the paper's generator
        radius = (r_max - r_min) * torch.rand(count, 1, generator=generator) ** (1.0 / dim) + r_min
        xs.append(direction * radius)
        ys.append(torch.full((count,), label, dtype=torch.long))
    order = torch.randperm(n, generator=generator)
    return Split(torch.cat(xs)[order], torch.cat(ys)[order])


def load_spheres(dim: int, *, n_train: int = 2000, n_test: int = 1000, seed: int = 0) -> tuple[Split, Split]:
    generator = torch.Generator().manual_seed(seed)
    return concentric_spheres(dim, n_train, generator), concentric_spheres(dim, n_test, generator)


def load_digits_split(*, test_fraction: float = 0.2, seed: int = 0) -> tuple[Split, Split]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy((digits.images * (255.0 / 16.0)).round().astype(np.uint8)).unsqueeze(1)  # (N, 1, 8, 8)
    y = torch.from_numpy(digits.target.astype(np.int64))
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(y)))
    return Split(x[order[n_test:]], y[order[n_test:]]), Split(x[order[:n_test]], y[order[:n_test]])


# ---------------------------------------------------------------------------------------------
# MNIST: idx ubyte files
# ---------------------------------------------------------------------------------------------

MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: str) -> np.ndarray:
    """Read an idx file (``.gz`` or plain) of unsigned bytes: images ``(N, H, W)`` or labels ``(N,)``."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: cannot read idx file ({error})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an idx file (the first two bytes of an idx header are zero)")
    if raw[2] != 0x08:
        raise DataError(f"{path}: idx element type 0x{raw[2]:02x} is not unsigned byte (0x08)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: idx header truncated")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    expected = int(np.prod(shape)) if shape else 0
    payload = raw[4 + 4 * ndim:]
    if len(payload) != expected:
        raise DataError(f"{path}: header promises shape {tuple(shape)} ({expected} bytes), file holds "
                        f"{len(payload)} bytes")
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape)


def _find(data_dir: str, names: tuple[str, ...], subdirs: tuple[str, ...]) -> str | None:
    for sub in subdirs:
        for name in names:
            path = os.path.join(data_dir, sub, name)
            if os.path.isfile(path):
                return path
    return None


def load_mnist(data_dir: str) -> tuple[Split, Split]:
    subdirs = ("", "MNIST/raw", "mnist", "MNIST")
    splits = []
    for split, (images_name, labels_name) in MNIST_FILES.items():
        paths = []
        for name in (images_name, labels_name):
            path = _find(data_dir, (name, name + ".gz"), subdirs)
            if path is None:
                raise DataError(f"mnist: {name}[.gz] not found under {data_dir!r} (looked in "
                                f"{', '.join(repr(s or '.') for s in subdirs)}); pass --download true to fetch it")
            paths.append(path)
        images, labels = read_idx(paths[0]), read_idx(paths[1])
        if images.ndim != 3 or labels.ndim != 1:
            raise DataError(f"{paths[0]}: expected images (N, H, W) and labels (N,), got shapes "
                            f"{images.shape} and {labels.shape}")
        if len(images) != len(labels):
            raise DataError(f"{paths[1]}: {len(labels)} labels for {len(images)} images in {paths[0]}")
        if labels.size and labels.max() > 9:
            raise DataError(f"{paths[1]}: label {int(labels.max())} outside 0..9")
        splits.append(Split(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))))
    return splits[0], splits[1]


# ---------------------------------------------------------------------------------------------
# CIFAR: python pickles, read by a restricted unpickler
# ---------------------------------------------------------------------------------------------

_NUMPY_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                  ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                  ("numpy", "ndarray"), ("numpy", "dtype"),
                  ("_codecs", "encode")}  # how protocol-2 pickles written by Python 3 spell a bytes object


class _ArrayUnpickler(pickle.Unpickler):
    """Builds only plain containers, bytes/str/numbers and numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_GLOBALS:
            if module.startswith("numpy.core.") and hasattr(np, "_core"):
                module = module.replace("numpy.core.", "numpy._core.")
            return getattr(importlib.import_module(module), name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch holds only dicts, "
                                     "lists, bytes and numpy arrays")


def read_cifar_batch(path: str, label_key: str) -> Split:
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    except OSError as error:
        raise DataError(f"{path}: cannot read CIFAR batch ({error})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise DataError(f"{path}: not a CIFAR python batch ({error})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: a CIFAR batch is a dict, got {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or label_key not in batch:
        raise DataError(f"{path}: a CIFAR batch needs keys 'data' and {label_key!r}, found {sorted(batch)}")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), got "
                        f"{type(data).__name__} {getattr(data, 'dtype', '')} {shape}")
    labels = np.asarray(batch[label_key])
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: {label_key!r} must hold one integer label per image ({len(data)}), "
                        f"got {labels.shape} {labels.dtype}")
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return Split(x, torch.from_numpy(labels.astype(np.int64)))


def load_cifar(data_dir: str, num_classes: int) -> tuple[Split, Split]:
    if num_classes == 10:
        folder, train_files, test_files, key = ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                                                ["test_batch"], "labels")
    else:
        folder, train_files, test_files, key = "cifar-100-python", ["train"], ["test"], "fine_labels"
    root = os.path.join(data_dir, folder)
    if not os.path.isdir(root):
        root = data_dir
    splits = []
    for files in (train_files, test_files):
        parts = []
        for name in files:
            path = os.path.join(root, name)
            if not os.path.isfile(path):
                raise DataError(f"cifar{num_classes}: {name} not found in {os.path.join(data_dir, folder)!r} "
                                f"or {data_dir!r}; pass --download true to fetch it")
            part = read_cifar_batch(path, key)
            if len(part) and not (0 <= int(part.y.min()) and int(part.y.max()) < num_classes):
                raise DataError(f"{path}: labels must lie in 0..{num_classes - 1}")
            parts.append(part)
        splits.append(Split(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts])))
    return splits[0], splits[1]


def download(name: str, data_dir: str) -> None:
    """Fetch a dataset's standard files into ``data_dir`` (only when the user asked for it)."""
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "cifar10": torchvision.datasets.CIFAR10,
           "cifar100": torchvision.datasets.CIFAR100}[name]
    for train in (True, False):
        cls(root=data_dir, train=train, download=True)


# ---------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------

def load_dataset(name: str, *, data_dir: str | None = None, download_files: bool = False, data_seed: int = 0,
                 val_fraction: float = 0.0, train_subset: int | None = None, test_subset: int | None = None,
                 n_train: int = 2000, n_test: int = 1000) -> Dataset:
    """Load ``name`` with an optional validation split carved (seeded) out of the training split."""
    crop, flip = 0, False
    if name.startswith("spheres"):
        train, test = load_spheres(int(name[len("spheres"):]), n_train=n_train, n_test=n_test, seed=data_seed)
        num_classes = 2
    elif name == "digits":
        train, test = load_digits_split(seed=data_seed)
        num_classes, crop = 10, 1
    elif name in ("mnist", "cifar10", "cifar100"):
        if not data_dir:
            raise DataError(f"{name}: needs --data-dir (a folder with the dataset's files)")
        if download_files:
            download(name, data_dir)
        if name == "mnist":
            train, test = load_mnist(data_dir)
            num_classes, crop = 10, 2
        else:
            num_classes = 10 if name == "cifar10" else 100
            train, test = load_cifar(data_dir, num_classes)
            crop, flip = 4, True
    else:
        raise DataError(f"dataset: unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")

    generator = torch.Generator().manual_seed(data_seed + 1)
    if train_subset:
        train = train.subset(torch.randperm(len(train), generator=generator)[:train_subset])
    if test_subset:
        test = test.subset(torch.arange(min(test_subset, len(test))))
    val = None
    if val_fraction > 0:
        order = torch.randperm(len(train), generator=generator)
        n_val = max(1, int(round(val_fraction * len(train))))
        train, val = train.subset(order[n_val:]), train.subset(order[:n_val])
    if len(train) == 0 or len(test) == 0:
        raise DataError(f"{name}: empty training or test split")

    sample = train.x.float() / 255.0 if train.x.dtype == torch.uint8 else train.x.float()
    if sample.dim() == 4:
        mean, std = sample.mean(dim=(0, 2, 3)), sample.std(dim=(0, 2, 3)).clamp_min(1e-6)
    else:
        mean, std = torch.zeros(1), torch.ones(1)
    return Dataset(name=name, train=train, test=test, val=val, input_shape=tuple(train.x.shape[1:]),
                   num_classes=num_classes, mean=mean, std=std, crop_padding=crop, flip=flip)
