"""Loaders, fed tiny files written here in the datasets' real formats."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from vision.data import (DataError, augment, batches, concentric_spheres, load_dataset, load_spheres,
                         read_idx)


# ---------------------------------------------------------------------------------------------
# writers of the real formats
# ---------------------------------------------------------------------------------------------

def write_idx(path, array, compress=False):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(payload)


def write_mnist(root, n_train=6, n_test=4, compress=False, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        suffix = ".gz" if compress else ""
        write_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte{suffix}"), images, compress)
        write_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte{suffix}"), labels, compress)
        arrays[prefix] = (images, labels)
    return arrays


def write_cifar_batch(path, n, num_classes, label_key, rng, bytes_keys=True):
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, num_classes, size=n)]
    k = (lambda s: s.encode()) if bytes_keys else (lambda s: s)
    batch = {k("batch_label"): k("tiny"), k("data"): data, k(label_key): labels,
             k("filenames"): [k(f"img{i}.png") for i in range(n)]}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)
    return data, labels


def write_cifar10(root, rng, per_batch=3):
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)
    written = [write_cifar_batch(os.path.join(folder, f"data_batch_{i}"), per_batch, 10, "labels", rng)
               for i in range(1, 6)]
    test = write_cifar_batch(os.path.join(folder, "test_batch"), 4, 10, "labels", rng, bytes_keys=False)
    return written, test


# ---------------------------------------------------------------------------------------------
# MNIST
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_files(tmp_path, compress):
    arrays = write_mnist(str(tmp_path / "MNIST" / "raw"), compress=compress)
    data = load_dataset("mnist", data_dir=str(tmp_path))
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert torch.equal(data.train.x[:, 0], torch.from_numpy(arrays["train"][0]))
    assert torch.equal(data.test.y, torch.from_numpy(arrays["t10k"][1].astype(np.int64)))
    assert data.crop_padding == 2 and not data.flip


def test_malformed_idx_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="not an idx file"):
        read_idx(str(bad))
    write_idx(str(tmp_path / "short"), np.zeros((4, 2, 2), np.uint8))
    raw = (tmp_path / "short").read_bytes()
    (tmp_path / "short").write_bytes(raw[:-3])
    with pytest.raises(DataError, match=r"promises shape \(4, 2, 2\) \(16 bytes\), file holds 13"):
        read_idx(str(tmp_path / "short"))
    (tmp_path / "float").write_bytes(b"\x00\x00\x0d\x01" + struct.pack(">I", 1) + b"\x00" * 4)
    with pytest.raises(DataError, match="not unsigned byte"):
        read_idx(str(tmp_path / "float"))


def test_mnist_mismatched_labels_and_missing_files(tmp_path):
    root = tmp_path / "m"
    write_mnist(str(root))
    write_idx(str(root / "train-labels-idx1-ubyte"), np.zeros(5, np.uint8))
    with pytest.raises(DataError, match="5 labels for 6 images"):
        load_dataset("mnist", data_dir=str(root))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\[.gz\] not found.*--download"):
        load_dataset("mnist", data_dir=str(tmp_path / "empty"))


# ---------------------------------------------------------------------------------------------
# CIFAR
# ---------------------------------------------------------------------------------------------

def test_cifar10_pickles(tmp_path):
    rng = np.random.default_rng(1)
    written, (test_data, test_labels) = write_cifar10(str(tmp_path), rng)
    data = load_dataset("cifar10", data_dir=str(tmp_path))
    assert len(data.train) == 15 and len(data.test) == 4 and data.input_shape == (3, 32, 32)
    assert torch.equal(data.train.x[:3], torch.from_numpy(written[0][0].reshape(3, 3, 32, 32)))
    assert data.train.y.tolist()[3:6] == written[1][1]
    assert data.test.y.tolist() == test_labels
    assert data.crop_padding == 4 and data.flip
    # channel statistics come from the training split
    expected = torch.from_numpy(np.concatenate([w[0] for w in written]).reshape(-1, 3, 1024) / 255.0).mean((0, 2))
    torch.testing.assert_close(data.mean, expected.float())


def test_cifar100_pickles(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    _, labels = write_cifar_batch(str(folder / "train"), 5, 100, "fine_labels", rng)
    write_cifar_batch(str(folder / "test"), 2, 100, "fine_labels", rng)
    data = load_dataset("cifar100", data_dir=str(tmp_path))
    assert data.num_classes == 100 and data.train.y.tolist() == labels


class Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_cifar_pickle_with_code_is_refused(tmp_path):
    rng = np.random.default_rng(3)
    write_cifar10(str(tmp_path), rng)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_2", "wb") as f:
        pickle.dump({b"data": np.zeros((1, 3072), np.uint8), b"labels": [Boom()]}, f, protocol=2)
    with pytest.raises(DataError, match=r"data_batch_2: not a CIFAR python batch \(refusing to load .*system"):
        load_dataset("cifar10", data_dir=str(tmp_path))


@pytest.mark.parametrize("batch,message", [
    ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, r"shape \(N, 3072\)"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "one integer label per image"),
    ({b"pixels": np.zeros((2, 3072), np.uint8)}, "needs keys 'data' and 'labels'"),
    ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [12]}, r"labels must lie in 0..9"),
    ([1, 2, 3], "a CIFAR batch is a dict"),
])
def test_malformed_cifar_batches(tmp_path, batch, message):
    rng = np.random.default_rng(4)
    write_cifar10(str(tmp_path), rng)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump(batch, f, protocol=2)
    with pytest.raises(DataError, match=message):
        load_dataset("cifar10", data_dir=str(tmp_path))
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DataError, match="test_batch: not a CIFAR python batch"):
        load_dataset("cifar10", data_dir=str(tmp_path))


# ---------------------------------------------------------------------------------------------
# generated and bundled data, batching, augmentation
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dim", [2, 3, 10])
def test_concentric_spheres(dim):
    split = concentric_spheres(dim, 400, torch.Generator().manual_seed(0))
    radius = split.x.norm(dim=1)
    assert split.x.shape == (400, dim)
    inner, middle, outer = radius <= 0.15 + 1e-6, (radius >= 0.25 - 1e-6) & (radius <= 0.30 + 1e-6), radius >= 0.40 - 1e-6
    assert bool((inner | middle | outer).all())
    assert bool((split.y[middle] == 1).all()) and bool((split.y[inner | outer] == 0).all())
    assert int(middle.sum()) == 200 and int(inner.sum()) == 100
    train_a, test_a = load_spheres(dim, n_train=40, n_test=20, seed=5)
    train_b, _ = load_spheres(dim, n_train=40, n_test=20, seed=5)
    train_c, _ = load_spheres(dim, n_train=40, n_test=20, seed=6)
    assert torch.equal(train_a.x, train_b.x) and not torch.equal(train_a.x, train_c.x)
    assert not torch.equal(train_a.x[:20], test_a.x)


def test_digits_and_validation_split():
    data = load_dataset("digits", val_fraction=0.1)
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert len(data.train) + len(data.val) + len(data.test) == 1797
    assert len(data.val) == round(0.1 * (1797 - len(data.test)))
    x = data.prepare(data.train.x[:64])
    assert x.dtype == torch.float32 and abs(float(x.mean())) < 0.5


def test_batches_and_augment_are_seeded():
    data = load_dataset("spheres2", n_train=50, n_test=10)
    a = [y for _, y in batches(data.train, 16, shuffle=True, generator=torch.Generator().manual_seed(1))]
    b = [y for _, y in batches(data.train, 16, shuffle=True, generator=torch.Generator().manual_seed(1))]
    assert [len(y) for y in a] == [16, 16, 16, 2] and all(torch.equal(u, v) for u, v in zip(a, b))
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    out1 = augment(images, padding=2, flip=True, generator=torch.Generator().manual_seed(3))
    out2 = augment(images, padding=2, flip=True, generator=torch.Generator().manual_seed(3))
    assert out1.shape == images.shape and torch.equal(out1, out2)
    outs = [augment(images, padding=1, flip=False, generator=torch.Generator().manual_seed(s)) for s in range(8)]
    assert any(not torch.equal(o, images) for o in outs)
    flipped = [augment(images, padding=0, flip=True, generator=torch.Generator().manual_seed(s)) for s in range(8)]
    assert any(torch.equal(f[0], images[0].flip(2)) for f in flipped)


def test_unknown_dataset_and_missing_dir():
    with pytest.raises(DataError, match="unknown dataset 'svhn'.*cifar10"):
        load_dataset("svhn")
    with pytest.raises(DataError, match="needs --data-dir"):
        load_dataset("cifar10")
