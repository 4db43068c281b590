"""Data sets for the flows: toy 2-D densities, digits, CIFAR10, ImageNet32, and dequantisation.

Conventions shared by every loader built here:

* Image sets are held as **uint8** arrays ``(N, C, H, W)`` and loaders yield ``(uint8 batch, int64
  labels)``. The training loop moves the uint8 batch to the device and calls :func:`dequantize` there,
  so the host never holds float copies of the images.
* Uniform dequantisation (paper §4, "uniform dequantization"): a pixel p in {0..n-1} becomes
  x = (p + u)/n with u ~ U[0, 1) per sub-pixel, for training **and** test batches (the authors' code).
  The density of the discrete data is then p(x)·n^-D, which is why bpd adds log2 n per dimension to
  the flow's -log p_X(x) / (D ln 2) with p_X from the change of variables (paper eq. 1).
* Toy sets are drawn fresh at every step (FFJORD / Residual Flows toy training); the validation and
  test sets are fixed samples of 10,000 points each, from two seeds of their own that do not depend
  on the training seed, so every trial of a sweep is scored on the same points (paper Table 1 reports
  nats per 2-D sample).
* **Validation** (every decision of a search: ASHA, TPE, ``best``) never sees the test set. Toy sets
  draw their own validation sample; image sets hold out a fixed part of the training set (a tenth,
  at most :data:`VALIDATION_MAX` images, chosen by a permutation from :data:`VALIDATION_SEED` whatever
  the training seed), which training then never sees. The test set is kept for the report.
* ``batch_size`` and ``test_batch_size`` are **global**: with ``world_size`` processes each rank's
  loader yields ``batch_size // world_size`` items (the authors' 4 GPUs shared a batch of 64).
  Training batches are split with :class:`torch.utils.data.DistributedSampler`; test sets are split
  into disjoint strided shards that together cover every test item exactly once, so ranks should
  all-reduce *sums* (and counts) of the test loss, not means.
* Every loader has ``set_epoch(epoch)``; iterating without calling it advances the epoch by one, so a
  plain ``for epoch ...: for batch in loader`` gets a fresh order / flips / toy samples each epoch,
  and ``set_epoch`` reproduces an epoch exactly after a resume.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset, TensorDataset

from .datasets import DATASETS, IMAGE_SETS, TOY_SETS, DatasetInfo, dataset_info
from .errors import UserError

__all__ = [
    "DatasetNotFound",
    "TOY_SETS",
    "IMAGE_SETS",
    "DATASETS",
    "TOY_IDENTITY_NLL",
    "TOY_ENTROPY",
    "DIGITS_N_TEST",
    "toy_sample",
    "dequantize",
    "dataset_info",
    "DatasetInfo",
    "load_digits_uint8",
    "load_cifar10",
    "load_imagenet32",
    "ImageDataset",
    "EpochDataLoader",
    "ToyLoader",
    "Loaders",
    "make_loaders",
    "validation_indices",
    "require_dataset",
    "set_epoch",
    "default_loader_workers",
]


# -E[log N(x; 0, I)] in nats per sample: the test NLL of a flow that is the identity (g = 0).
TOY_IDENTITY_NLL: dict[str, float] = {"circles": 4.7080, "checkerboard": 7.1712, "moons": 3.910}
# True differential entropy in nats: the best expected test NLL any model can reach.
TOY_ENTROPY: dict[str, float] = {"circles": 3.269, "checkerboard": math.log(32.0), "moons": 2.395}

DIGITS_N_TEST = 297  # the last 297 of scikit-learn's 1,797 digits are the test split (1,500 train)
TOY_TEST_SIZE = 10_000
TOY_TEST_SEED = 20210  # the toy test set's seed; independent of the training seed on purpose
TOY_VAL_SEED = 20211  # the toy validation set's seed (its own sample, never the test points)
#: validation images held out of an image set's training split: a tenth, at most this many (digits
#: 1,500 → 1,350 + 150; CIFAR10 50,000 → 45,000 + 5,000; ImageNet32 1,281,167 → 1,271,167 + 10,000)
VALIDATION_MAX = 10_000
VALIDATION_SEED = 31337  # the held-out images' permutation; independent of every training seed
_TRAIN_STREAM, _FLIP_STREAM = 1, 2  # SeedSequence tags keeping independent random streams apart

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
IMAGENET32_FOLDER = "imagenet32"
IMAGENET32_TRAIN_FILES = tuple(f"train_data_batch_{i}.npz" for i in range(1, 11))
IMAGENET32_VAL_FILE = "val_data.npz"


class DatasetNotFound(UserError):
    """An image data set's files are missing or unreadable; the message names the folder to fill."""


# ---------------------------------------------------------------------------------------- toy data
def _sklearn_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**32 - 1))


def _moons(n: int, rng: np.random.Generator) -> np.ndarray:
    """Two interleaved half circles, ⌊n/2⌋ points on (cos t, sin t) and the rest on (1 − cos t,
    1 − sin t − 0.5), t evenly spaced on [0, π], shuffled, plus N(0, 0.1²) noise; then scaled by 2 and
    shifted by (−1, −0.2). The points are those of scikit-learn's ``make_moons(noise=0.1)`` with the
    same seed (the authors' toy data; tests/test_data.py checks the equality), drawn without importing
    scikit-learn, whose import costs a trial over a second of start-up."""
    state = np.random.RandomState(_sklearn_seed(rng))
    outer, inner = np.linspace(0, np.pi, n // 2), np.linspace(0, np.pi, n - n // 2)
    points = np.empty((n, 2))
    points[:, 0] = np.concatenate([np.cos(outer), 1 - np.cos(inner)])
    points[:, 1] = np.concatenate([np.sin(outer), 1 - np.sin(inner) - 0.5])
    order = np.arange(n)
    state.shuffle(order)
    points = points[order]
    points += state.normal(scale=0.1, size=points.shape)
    return points * 2.0 + np.array([-1.0, -0.2])


def _circles(n: int, rng: np.random.Generator) -> np.ndarray:
    from sklearn.datasets import make_circles

    x, _ = make_circles(n_samples=n, factor=0.5, noise=0.08, random_state=_sklearn_seed(rng))
    return x * 3.0


def _checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    # x1 ~ U[-2, 2); x2 ~ U[0, 1) shifted to the row band of the same colour as column floor(x1)
    x1 = rng.random(n) * 4.0 - 2.0
    x2 = rng.random(n) - 2.0 * rng.integers(0, 2, n) + np.mod(np.floor(x1), 2.0)
    return np.stack([x1, x2], axis=1) * 2.0


def _eight_gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    # mixture of 8 equal Gaussians (sd 0.5) centred at radius 4 on the 8 compass directions, / sqrt 2
    angles = rng.integers(0, 8, n) * (np.pi / 4.0)
    centres = 4.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return (centres + 0.5 * rng.standard_normal((n, 2))) / math.sqrt(2.0)


def _pinwheel(n: int, rng: np.random.Generator) -> np.ndarray:
    # 5 arms; a point with radial coordinate r = 1 + 0.3 e and tangential 0.1 e' is rotated by
    # minus (its arm's angle plus 0.25 exp(r)), which bends the arm into a spiral, then x 2. The sign
    # follows FFJORD's generator, which multiplies the row vector by [[c, -s], [s, c]], i.e. R(-angle)
    n_arms, radial_sd, tangential_sd, rate = 5, 0.3, 0.1, 0.25
    arm = rng.permutation(np.arange(n) % n_arms)
    feats = rng.standard_normal((n, 2)) * np.array([radial_sd, tangential_sd])
    feats[:, 0] += 1.0
    angle = arm * (2.0 * np.pi / n_arms) + rate * np.exp(feats[:, 0])
    c, s = np.cos(angle), np.sin(angle)
    out = np.stack([c * feats[:, 0] + s * feats[:, 1], -s * feats[:, 0] + c * feats[:, 1]], axis=1)
    return 2.0 * out


def _two_spirals(n: int, rng: np.random.Generator) -> np.ndarray:
    # arc parameter t = 3 pi sqrt(U) (so arc-length density is roughly uniform), point t (-cos t, sin t)
    # plus U[0, 0.5)^2 jitter; the second spiral is the first mirrored through 0; / 3, + N(0, 0.1^2)
    n1 = n // 2
    t = np.sqrt(rng.random(n)) * 3.0 * np.pi
    pts = np.stack([-np.cos(t) * t, np.sin(t) * t], axis=1) + rng.random((n, 2)) * 0.5
    pts[n1:] *= -1.0
    pts = pts[rng.permutation(n)] / 3.0
    return pts + 0.1 * rng.standard_normal((n, 2))


_TOY_GENERATORS = {
    "moons": _moons,
    "circles": _circles,
    "checkerboard": _checkerboard,
    "8gaussians": _eight_gaussians,
    "pinwheel": _pinwheel,
    "2spirals": _two_spirals,
}


def toy_sample(name: str, n: int, rng: np.random.Generator) -> torch.Tensor:
    """``n`` iid points (float32, shape (n, 2)) from the toy density ``name`` (paper §4.1, Table 1).

    All randomness comes from ``rng`` (scikit-learn's generators get a ``random_state`` drawn from it),
    so the same generator state always gives the same points.
    """
    key = name.lower()
    if key not in _TOY_GENERATORS:
        raise ValueError(f"unknown toy data set {name!r}; valid names: {', '.join(TOY_SETS)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return torch.from_numpy(np.ascontiguousarray(_TOY_GENERATORS[key](n, rng), dtype=np.float32))


# ------------------------------------------------------------------------------- dequantisation
def dequantize(
    batch: torch.Tensor,
    n_levels: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Uniform dequantisation x = (p + u)/n_levels, u ~ U[0, 1) per sub-pixel, x in [0, 1).

    ``batch`` holds integer levels p in {0..n_levels-1} (uint8 from the loaders) on any device; the noise
    is drawn on that device (``generator`` must live there too). In float32, p + u rounds up to p + 1
    when u is within about 2^-17 of 1 (p >= 128), which would move the point into the next level's bin
    (and the top level onto 1); so x is capped at the largest float below (p + 1)/n, keeping every point
    inside its own bin [p/n, (p+1)/n) and x < 1.
    """
    if batch.is_floating_point() or batch.is_complex():
        raise TypeError(f"dequantize expects integer pixel levels, got {batch.dtype}")
    if n_levels < 2:
        raise ValueError(f"n_levels must be >= 2, got {n_levels}")
    p = batch.to(dtype)
    u = torch.rand(batch.shape, generator=generator, device=batch.device, dtype=dtype)
    upper = torch.nextafter((p + 1.0) / n_levels, torch.zeros((), dtype=dtype, device=batch.device))
    return torch.minimum((p + u) / n_levels, upper)


# ----------------------------------------------------------------------------------- image sets
def _digits_table() -> np.ndarray:
    """The (1797, 65) table scikit-learn's ``load_digits`` reads (64 pixels, then the label), read
    from the file scikit-learn ships without importing scikit-learn (over a second of a trial's
    start-up); tests/test_data.py checks it equals ``load_digits``."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFound("the digits data set ships with scikit-learn, which is not installed: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as f:
        return np.loadtxt(f, delimiter=",")


def load_digits_uint8(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 real 8x8 digits as uint8 (N, 1, 8, 8) with 17 levels 0..16, and labels.

    Deterministic split: the first 1,500 images train, the last ``DIGITS_N_TEST`` = 297 test (the file's
    order cycles through the classes, so both splits hold every digit).
    """
    data = _digits_table()
    images = np.rint(data[:, :-1]).reshape(-1, 8, 8).astype(np.uint8)[:, None]  # exact: integers 0..16
    labels = data[:, -1].astype(np.int64)
    cut = len(images) - DIGITS_N_TEST
    sl = slice(0, cut) if train else slice(cut, None)
    return torch.from_numpy(np.ascontiguousarray(images[sl])), torch.from_numpy(labels[sl].copy())


def _cifar_missing(folder: Path, why: str) -> DatasetNotFound:
    return DatasetNotFound(
        f"CIFAR10 {why} in {folder}/: put data_batch_1..data_batch_5, test_batch and batches.meta there "
        f"(the python version, cifar-10-python.tar.gz, extracted) or pass download=True"
    )


def load_cifar10(
    root: str | os.PathLike[str], train: bool, download: bool = False, verify: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR10 through torchvision's ``CIFAR10`` as uint8 (N, 3, 32, 32) in R, G, B order, and labels.

    ``verify=True`` keeps torchvision's md5 check of every file (the real archive). ``verify=False``
    only checks that the files exist; it is meant for user-built or test folders in the same format.
    Missing or corrupted files raise :class:`DatasetNotFound` naming ``<root>/cifar-10-batches-py``.
    """
    from torchvision.datasets import CIFAR10

    cls = CIFAR10
    if not verify:
        cls = type(
            "UnverifiedCIFAR10",
            (CIFAR10,),
            {
                "train_list": [[f, None] for f, _ in CIFAR10.train_list],
                "test_list": [[f, None] for f, _ in CIFAR10.test_list],
                "meta": {**CIFAR10.meta, "md5": None},
            },
        )
    folder = Path(root).expanduser() / CIFAR10_FOLDER
    try:
        ds = cls(root=str(Path(root).expanduser()), train=train, download=download)
    except RuntimeError:
        why = "files not found or failing the md5 check" if verify else "files not found"
        raise _cifar_missing(folder, why) from None
    except (OSError, EOFError, KeyError, ValueError, TypeError, pickle.UnpicklingError) as err:
        raise _cifar_missing(folder, f"unreadable ({type(err).__name__})") from None
    images = np.ascontiguousarray(np.asarray(ds.data, dtype=np.uint8).transpose(0, 3, 1, 2))
    return torch.from_numpy(images), torch.as_tensor(np.asarray(ds.targets, dtype=np.int64))


def _imagenet_missing(folder: Path, why: str) -> DatasetNotFound:
    return DatasetNotFound(
        f"ImageNet32 {why} in {folder}/: put train_data_batch_1.npz..train_data_batch_10.npz and "
        f"val_data.npz there (Imagenet32_train_npz.zip and Imagenet32_val_npz.zip, unzipped)"
    )


def _read_npz(path: Path, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(data uint8 (N, 3072), labels 0-based int64) of one Chrabaszcz et al. npz batch."""
    try:
        with np.load(path, allow_pickle=False) as f:
            data, labels = np.asarray(f["data"], dtype=np.uint8), np.asarray(f["labels"], dtype=np.int64)
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise _imagenet_missing(folder, f"file {path.name} unreadable ({type(err).__name__})") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise _imagenet_missing(folder, f"file {path.name} has data {data.shape}, labels {labels.shape}")
    return data, labels.reshape(-1) - 1  # the files number classes 1..1000


def _npz_rows(path: Path, folder: Path) -> int:
    """Number of images in an npz batch, from the ``data.npy`` header alone (nothing decompressed)."""
    try:
        with zipfile.ZipFile(path) as zf, zf.open("data.npy") as f:
            version = np.lib.format.read_magic(f)
            fmt = np.lib.format
            reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, _ = reader(f)
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise _imagenet_missing(folder, f"file {path.name} unreadable ({type(err).__name__})") from None
    return int(shape[0])


def _imagenet_files(root: str | os.PathLike[str], train: bool) -> tuple[Path, list[Path]]:
    folder = Path(root).expanduser() / IMAGENET32_FOLDER
    names = IMAGENET32_TRAIN_FILES if train else (IMAGENET32_VAL_FILE,)
    paths = [folder / n for n in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise _imagenet_missing(folder, f"files missing ({', '.join(missing)})")
    return folder, paths


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing): the ranks of a node that all find a
    cache missing build it once, the others wait and then read it."""
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _npy_cache(
    cdir: Path, split: str, sources: Sequence[Path], write: Callable[[Path, Path], None]
) -> tuple[Path, Path] | None:
    """Paths of one split's uint8 image / int64 label ``.npy`` files in ``cdir``, written by
    ``write(images_path, labels_path)`` if missing or older than a source file; None when ``cdir`` is
    not writable. The files appear atomically (written under temporary names, then renamed), and a
    lock makes one process per cache folder write them while the others wait."""
    img_path, lab_path = cdir / f"{split}_images_uint8.npy", cdir / f"{split}_labels_int64.npy"
    newest = max(p.stat().st_mtime for p in sources)

    def fresh() -> bool:
        return img_path.is_file() and lab_path.is_file() and min(
            img_path.stat().st_mtime, lab_path.stat().st_mtime) >= newest

    if fresh():
        return img_path, lab_path
    try:
        cdir.mkdir(parents=True, exist_ok=True)
        if not os.access(cdir, os.W_OK):
            return None
        with _file_lock(cdir / f".{split}.lock"):
            if fresh():  # another process built it while this one waited
                return img_path, lab_path
            tag = f".{os.getpid()}.tmp.npy"
            tmp_img, tmp_lab = img_path.with_suffix(tag), lab_path.with_suffix(tag)
            write(tmp_img, tmp_lab)
            os.replace(tmp_lab, lab_path)
            os.replace(tmp_img, img_path)
    except PermissionError:
        return None
    return img_path, lab_path


def _imagenet_cache(
    root: str | os.PathLike[str], train: bool, cache_dir: str | os.PathLike[str] | None
) -> tuple[Path, Path] | None:
    """Paths of the uint8 image / int64 label .npy cache of one split (:func:`_npy_cache`), converted
    one npz at a time, so the peak memory of building it is one batch."""
    folder, sources = _imagenet_files(root, train)
    cdir = Path(cache_dir).expanduser() if cache_dir is not None else folder / "cache"

    def write(img_path: Path, lab_path: Path) -> None:
        counts = [_npz_rows(p, folder) for p in sources]
        images = np.lib.format.open_memmap(img_path, mode="w+", dtype=np.uint8, shape=(sum(counts), 3, 32, 32))
        labels = np.empty(sum(counts), dtype=np.int64)
        start = 0
        for p, n in zip(sources, counts):
            data, lab = _read_npz(p, folder)
            images[start : start + n] = data.reshape(n, 3, 32, 32)
            labels[start : start + n] = lab
            start += n
        images.flush()
        del images
        np.save(lab_path, labels)

    return _npy_cache(cdir, "train" if train else "val", sources, write)


def _cifar_cache(root: str | os.PathLike[str], train: bool, download: bool, verify: bool) -> tuple[Path, Path] | None:
    """Paths of the uint8 image / int64 label .npy cache of one CIFAR10 split in
    ``<root>/cifar-10-batches-py/cache`` (:func:`_npy_cache`), written from :func:`load_cifar10`."""
    folder = Path(root).expanduser() / CIFAR10_FOLDER
    names = CIFAR10_FILES[:5] if train else CIFAR10_FILES[5:6]
    sources = [folder / n for n in names]
    if not all(p.is_file() for p in sources):
        if not download:
            return None  # load_cifar10 raises the error that names the folder
        load_cifar10(root, train, download=True, verify=verify)

    def write(img_path: Path, lab_path: Path) -> None:
        images, labels = load_cifar10(root, train, download=False, verify=verify)
        with open(img_path, "wb") as f:
            np.save(f, images.numpy())
        with open(lab_path, "wb") as f:
            np.save(f, labels.numpy())

    return _npy_cache(folder / "cache", "train" if train else "test", sources, write)


def load_imagenet32(
    root: str | os.PathLike[str],
    train: bool,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Downsampled ImageNet 32x32 (Chrabaszcz et al. npz batches in ``<root>/imagenet32/``) as uint8
    (N, 3, 32, 32) in R, G, B order, and 0-based labels. No mean subtraction (a flow models raw pixels).

    With ``cache=True`` the split is converted once to ``.npy`` files (default ``<root>/imagenet32/cache``)
    and returned memory-mapped (copy-on-write), so ranks and workers share the page cache; otherwise, or
    when the cache folder is not writable, the batches are concatenated in memory.
    """
    if cache:
        paths = _imagenet_cache(root, train, cache_dir)
        if paths is not None:
            images = np.load(paths[0], mmap_mode="c")
            return torch.from_numpy(images), torch.from_numpy(np.load(paths[1]))
    folder, sources = _imagenet_files(root, train)
    parts = [_read_npz(p, folder) for p in sources]
    data = np.concatenate([d for d, _ in parts]).reshape(-1, 3, 32, 32)
    return torch.from_numpy(data), torch.from_numpy(np.concatenate([lab for _, lab in parts]))


class _NpyImages:
    """Lazily memory-mapped uint8 (N, C, H, W) .npy; pickles as its path, so spawned workers re-open
    the map instead of copying the array."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._arr: np.ndarray | None = None
        self._len = int(np.load(self.path, mmap_mode="r").shape[0])

    def _array(self) -> np.ndarray:
        if self._arr is None:
            self._arr = np.load(self.path, mmap_mode="r")
        return self._arr

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> np.ndarray:
        return self._array()[i]

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_len": self._len, "_arr": None}


class ImageDataset(Dataset):
    """uint8 images (N, C, H, W) and int64 labels; item i is ``(uint8 tensor (C, H, W), label)``.

    With ``flip=True`` an image is mirrored left-right with probability 1/2, decided per epoch by a
    mask drawn from ``(seed, epoch)`` (see :meth:`set_epoch`), so flips are reproducible and identical
    whatever the number of DataLoader workers.
    """

    def __init__(
        self, images: Any, labels: torch.Tensor | np.ndarray, flip: bool = False, seed: int = 0
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images.numpy() if isinstance(images, torch.Tensor) else images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.flip, self.seed = flip, seed
        self._mask: np.ndarray | None = None
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        if self.flip:
            rng = np.random.default_rng([self.seed, _FLIP_STREAM, epoch])
            self._mask = rng.random(len(self.labels)) < 0.5

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.images[i]
        if self._mask is not None and self._mask[i]:
            img = img[..., ::-1]
        return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)), int(self.labels[i])


class EpochSubset(Subset):
    """A fixed part of a data set that passes ``set_epoch`` on (the flips of the images it holds)."""

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


class _ShardSampler(Sampler[int]):
    """Indices rank, rank + world_size, ...: disjoint shards covering 0..n-1 exactly once, in order."""

    def __init__(self, n: int, rank: int, world_size: int) -> None:
        self.n, self.rank, self.world_size = n, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


class EpochDataLoader(DataLoader):
    """A DataLoader whose sampler and dataset follow an epoch counter: ``set_epoch(e)`` fixes the next
    epoch; each ``iter()`` uses the current epoch, then advances it by one."""

    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):  # type: ignore[override]
        epoch = self.epoch
        self.epoch = epoch + 1
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return super().__iter__()


class ToyLoader:
    """Fresh toy samples every step: an epoch is ``n_batches`` global batches of ``world_size ×
    batch_size`` points drawn from the SeedSequence (seed, stream, epoch), of which rank r keeps rows
    r, r + world_size, ... So the global batch, and with it a data-parallel step, is the same whatever
    the number of workers, and :meth:`set_epoch` replays an epoch. Yields ``(float32 (B, 2), int64 (B,)
    of -1)`` with B = ``batch_size``, this rank's share."""

    def __init__(
        self, name: str, batch_size: int, n_batches: int, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        dataset_info(name)  # validates the name
        self.name, self.batch_size, self.n_batches = name.lower(), batch_size, n_batches
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, _TRAIN_STREAM, self.epoch])
        self.epoch += 1
        no_label = torch.full((self.batch_size,), -1, dtype=torch.int64)
        for _ in range(self.n_batches):
            batch = toy_sample(self.name, self.batch_size * self.world_size, rng)
            yield batch[self.rank :: self.world_size].contiguous(), no_label


class Loaders(NamedTuple):
    train: EpochDataLoader | ToyLoader
    test: EpochDataLoader
    input_shape: tuple[int, ...]
    n_levels: int | None
    val: EpochDataLoader | None = None


def validation_indices(n_train: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices) of an image set's training split of ``n_train`` images:
    the first min(⌊n/10⌋, :data:`VALIDATION_MAX`) of a permutation drawn from :data:`VALIDATION_SEED`
    are held out; both index lists are sorted (memory-mapped sets are read in file order)."""
    n_val = min(n_train // 10, VALIDATION_MAX)
    if n_val < 1:
        raise ValueError(f"{n_train} training images cannot spare a tenth for validation")
    perm = np.random.default_rng(VALIDATION_SEED).permutation(n_train)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _per_rank(batch_size: int, world_size: int, what: str) -> int:
    if batch_size < 1 or batch_size % world_size:
        raise ValueError(f"{what} {batch_size} must be a positive multiple of world_size {world_size}")
    return batch_size // world_size


def _image_arrays(
    key: str, root: str | os.PathLike[str] | None, train: bool, download: bool, verify: bool, share: bool
) -> tuple[Any, Any]:
    """(images, labels) of one split: digits in memory (1,797 small images); CIFAR10 and ImageNet32
    memory-mapped from their node's ``.npy`` cache when ``share`` (every process on the node then reads
    the same pages of the page cache: one copy per node), else a private in-memory copy."""
    if key == "digits":
        return load_digits_uint8(train)
    if root is None:
        raise ValueError(f"data set {key!r} needs a root folder")
    if key == "cifar10":
        paths = _cifar_cache(root, train, download, verify) if share else None
        if paths is None:
            return load_cifar10(root, train, download=download, verify=verify)
    else:
        paths = _imagenet_cache(root, train, None) if share else None
        if paths is None:
            return load_imagenet32(root, train, cache=False)
    return _NpyImages(paths[0]), np.load(paths[1])


#: loader processes a GPU worker runs at most on an image set from disk (``bench.data_scaling``: one
#: process in-line already reads the uint8 arrays hundreds of times faster than a GPU step consumes
#: them; the worker processes are there to read ahead while the first epoch faults pages in from disk)
MAX_LOADER_WORKERS = 2


def default_loader_workers(name: str, reserved_cpus: float | None, on_gpu: bool) -> int:
    """DataLoader worker processes for a training process that reserves ``reserved_cpus`` CPUs:
    0 for toy sets (drawn in-line), digits (in memory) and on a CPU (the step's threads use every
    reserved CPU); on a GPU, an on-disk image set gets the reserved CPUs less the one the training
    process needs, at most :data:`MAX_LOADER_WORKERS`."""
    if not on_gpu or dataset_info(name).is_toy or name.lower() == "digits" or reserved_cpus is None:
        return 0
    return max(0, min(int(reserved_cpus) - 1, MAX_LOADER_WORKERS))


def require_dataset(name: str, root: str | os.PathLike[str] | None) -> None:
    """The files of an on-disk image set must be present before any training starts
    (:class:`DatasetNotFound` names the folder and the first missing files)."""
    info = dataset_info(name)
    if info.name == "cifar10":
        folder, files = CIFAR10_FOLDER, CIFAR10_FILES
    elif info.name == "imagenet32":
        folder, files = IMAGENET32_FOLDER, IMAGENET32_TRAIN_FILES + (IMAGENET32_VAL_FILE,)
    else:
        return
    if root is None:
        raise DatasetNotFound(f"data set {name!r} needs --data-root (the folder holding {folder}/)")
    path = Path(root).expanduser() / folder
    missing = [f for f in files if not (path / f).is_file()]
    if missing:
        raise DatasetNotFound(f"data set {name!r} not found: {path} lacks {', '.join(missing[:3])}"
                              + (" ..." if len(missing) > 3 else ""))


def make_loaders(
    name: str,
    root: str | os.PathLike[str] | None,
    batch_size: int,
    test_batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    num_workers: int = 0,
    *,
    download: bool = False,
    verify: bool = True,
    toy_batches_per_epoch: int = 100,
    toy_test_size: int = TOY_TEST_SIZE,
    toy_test_seed: int = TOY_TEST_SEED,
    pin_memory: bool = False,
    share: bool = True,
) -> Loaders:
    """Train and test loaders of one process of ``world_size`` for data set ``name``.

    Batch sizes are global (each rank gets ``batch_size // world_size``). Image loaders yield uint8
    ``(B, C, H, W)`` batches plus int64 labels (dequantise on the device with :func:`dequantize`);
    CIFAR10 training images are randomly flipped left-right. Training batches are shuffled by a
    ``DistributedSampler(num_replicas=world_size, rank=rank, seed=seed)`` (no process group needed) and
    drop the last incomplete batch; test loaders keep order and shard exactly. Toy sets give a
    :class:`ToyLoader` for training and fixed validation and test sets of ``toy_test_size`` points
    each, drawn from ``TOY_VAL_SEED`` and ``toy_test_seed`` only. Image sets: the validation loader
    reads the held-out images (:func:`validation_indices`), the training loader the rest.
    ``share=False`` gives this process a private copy of an image set instead of the node's memory map.
    """
    key = name.lower()
    info = dataset_info(key)
    input_shape, n_levels = info.shape, info.n_levels
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} must lie in [0, world_size={world_size})")
    train_bs = _per_rank(batch_size, world_size, "batch_size")
    test_bs = _per_rank(test_batch_size, world_size, "test_batch_size")
    common: dict[str, Any] = dict(num_workers=num_workers, pin_memory=pin_memory)

    if key in TOY_SETS:
        no_label = torch.full((toy_test_size,), -1, dtype=torch.int64)
        test_ds = TensorDataset(toy_sample(key, toy_test_size, np.random.default_rng(toy_test_seed)), no_label)
        val_ds = TensorDataset(toy_sample(key, toy_test_size, np.random.default_rng(TOY_VAL_SEED)), no_label)
        train: EpochDataLoader | ToyLoader = ToyLoader(key, train_bs, toy_batches_per_epoch, seed, rank, world_size)
    else:
        images, labels = _image_arrays(key, root, True, download, verify, share)
        keep, held_out = validation_indices(len(labels))
        val_ds = EpochSubset(ImageDataset(images, labels), held_out)
        train_ds = EpochSubset(ImageDataset(images, labels, flip=(key == "cifar10"), seed=seed), keep)
        sampler = DistributedSampler(
            train_ds, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=False
        )
        train = EpochDataLoader(train_ds, batch_size=train_bs, sampler=sampler, drop_last=True, **common)
        images, labels = _image_arrays(key, root, False, download, verify, share)
        test_ds = ImageDataset(images, labels)
    test, val = (EpochDataLoader(ds, batch_size=test_bs, sampler=_ShardSampler(len(ds), rank, world_size), **common)
                 for ds in (test_ds, val_ds))
    return Loaders(train, test, input_shape, n_levels, val)


def set_epoch(loaders: Loaders | Sequence[Any], epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on each loader (train and test) that has one."""
    for loader in loaders:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
