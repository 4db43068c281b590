"""Tests for model/data.py: toy generators, digits, CIFAR10 / ImageNet32 on-disk formats, loaders and
dequantisation. Image tests use small fakes written in the real formats under tmp_path."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from model import data as D

# ------------------------------------------------------------------------------------------ toy


@pytest.mark.parametrize("name", D.TOY_SETS)
@pytest.mark.parametrize("n", [1, 7, 500])
def test_toy_shapes_and_dtype(name: str, n: int) -> None:
    x = D.toy_sample(name, n, np.random.default_rng(0))
    assert x.shape == (n, 2) and x.dtype == torch.float32
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("name", D.TOY_SETS)
def test_toy_reproducible_from_generator(name: str) -> None:
    a = D.toy_sample(name, 300, np.random.default_rng(123))
    b = D.toy_sample(name, 300, np.random.default_rng(123))
    c = D.toy_sample(name, 300, np.random.default_rng(124))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # the global numpy RNG is not used: reseeding it changes nothing
    np.random.seed(0)
    d = D.toy_sample(name, 300, np.random.default_rng(123))
    assert torch.equal(a, d)


def test_toy_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError) as err:
        D.toy_sample("swirl", 10, np.random.default_rng(0))
    for name in ("moons", "circles", "checkerboard"):
        assert name in str(err.value)


def test_moons_statistics() -> None:
    x = D.toy_sample("moons", 200_000, np.random.default_rng(1)).double()
    assert torch.allclose(x.mean(0), torch.tensor([0.0, 0.3], dtype=torch.float64), atol=0.015)
    # every point lies near one of the two radius-2 arcs centred at (-1, -0.2) and (1, 0.8)
    d1 = (x - torch.tensor([-1.0, -0.2], dtype=torch.float64)).norm(dim=1)
    d2 = (x - torch.tensor([1.0, 0.8], dtype=torch.float64)).norm(dim=1)
    near = torch.minimum((d1 - 2).abs(), (d2 - 2).abs())
    assert (near < 1.0).all()  # noise sd 0.2: 1.0 is five sd
    assert abs(near.pow(2).mean().sqrt().item() - 0.2) < 0.02


@pytest.mark.parametrize("n", [1, 2, 7, 250, 1001])
@pytest.mark.parametrize("seed", [0, 1, 2**31 + 5])
def test_moons_are_scikit_learns_points_for_the_same_seed(n: int, seed: int) -> None:
    """The moons are drawn without importing scikit-learn, but must stay the authors' data."""
    from sklearn.datasets import make_moons

    ours = D._moons(n, np.random.default_rng(seed))
    theirs, _ = make_moons(n_samples=n, noise=0.1, random_state=D._sklearn_seed(np.random.default_rng(seed)))
    np.testing.assert_array_equal(ours, theirs * 2.0 + np.array([-1.0, -0.2]))


def test_digits_table_is_scikit_learns_load_digits() -> None:
    from sklearn.datasets import load_digits

    d = load_digits()
    table = D._digits_table()
    np.testing.assert_array_equal(table[:, :-1], d.data)
    np.testing.assert_array_equal(table[:, -1].astype(int), d.target)


def test_circles_radii() -> None:
    n = 100_000
    r = D.toy_sample("circles", n, np.random.default_rng(2)).double().norm(dim=1)
    inner, outer = r[r < 2.25], r[r >= 2.25]
    assert abs(len(inner) - n / 2) < 0.01 * n
    # E|c + e| ~ R + s^2 / (2R) for a circle of radius R and noise sd s = 0.24
    assert abs(inner.mean().item() - (1.5 + 0.24**2 / 3.0)) < 0.01
    assert abs(outer.mean().item() - (3.0 + 0.24**2 / 6.0)) < 0.01


def test_checkerboard_support() -> None:
    x = D.toy_sample("checkerboard", 80_000, np.random.default_rng(3)).double()
    assert (x >= -4).all() and (x < 4).all()
    i, j = torch.floor(x[:, 0] / 2).long(), torch.floor(x[:, 1] / 2).long()
    assert ((i + j) % 2 == 0).all()  # only the squares of the colour of [0, 2) x [0, 2)
    counts = torch.bincount((i + 2) * 4 + (j + 2), minlength=16)
    filled = counts[counts > 0]
    assert len(filled) == 8
    assert (filled - 10_000).abs().max() < 500  # uniform over the 8 squares


@pytest.mark.parametrize("name", ["circles", "checkerboard", "moons"])
def test_identity_nll_constants_match_generators(name: str) -> None:
    # identity flow: -log N(x; 0, I) = |x|^2 / 2 + log(2 pi), averaged over the data
    x = D.toy_sample(name, 400_000, np.random.default_rng(4)).double()
    nll = (0.5 * x.pow(2).sum(1) + math.log(2 * math.pi)).mean().item()
    assert abs(nll - D.TOY_IDENTITY_NLL[name]) < 0.03
    assert D.TOY_ENTROPY[name] < D.TOY_IDENTITY_NLL[name]
    assert D.TOY_ENTROPY["checkerboard"] == pytest.approx(math.log(32.0))


def test_toy_loaders() -> None:
    loaders = D.make_loaders("moons", None, 500, 10_000, seed=5, toy_batches_per_epoch=4)
    assert loaders.input_shape == (2,) and loaders.n_levels is None
    epoch0 = [x for x, _ in loaders.train]
    assert len(epoch0) == 4 == len(loaders.train)
    assert all(b.shape == (500, 2) and b.dtype == torch.float32 for b in epoch0)
    assert not torch.equal(epoch0[0], epoch0[1])  # fresh points every step
    epoch1 = [x for x, _ in loaders.train]
    assert not torch.equal(epoch0[0], epoch1[0])  # and every epoch
    loaders.train.set_epoch(0)
    assert all(torch.equal(a, b) for a, (b, _) in zip(epoch0, loaders.train))  # replayable
    test = torch.cat([x for x, _ in loaders.test])
    val = torch.cat([x for x, _ in loaders.val])
    assert test.shape == val.shape == (10_000, 2)
    # the test and validation sets depend on their own seeds only, not on the training seed
    other = D.make_loaders("moons", None, 500, 10_000, seed=99)
    assert torch.equal(test, torch.cat([x for x, _ in other.test]))
    assert torch.equal(val, torch.cat([x for x, _ in other.val]))
    assert not torch.equal(test[:500], epoch0[0])


def test_toy_loaders_distributed() -> None:
    r0 = D.make_loaders("circles", None, 100, 1000, rank=0, world_size=2, toy_batches_per_epoch=2)
    r1 = D.make_loaders("circles", None, 100, 1000, rank=1, world_size=2, toy_batches_per_epoch=2)
    b0, b1 = next(iter(r0.train))[0], next(iter(r1.train))[0]
    assert b0.shape == b1.shape == (50, 2)
    assert not torch.equal(b0, b1)
    full = D.make_loaders("circles", None, 100, 1000).test.dataset.tensors[0]
    shards = [torch.cat([x for x, _ in r.test]) for r in (r0, r1)]
    assert len(shards[0]) + len(shards[1]) == len(full) == D.TOY_TEST_SIZE
    assert torch.equal(shards[0], full[0::2]) and torch.equal(shards[1], full[1::2])


# -------------------------------------------------------------------------------------- digits


def test_digits_split() -> None:
    from sklearn.datasets import load_digits

    xtr, ytr = D.load_digits_uint8(train=True)
    xte, yte = D.load_digits_uint8(train=False)
    assert xtr.shape == (1500, 1, 8, 8) and xte.shape == (D.DIGITS_N_TEST, 1, 8, 8) == (297, 1, 8, 8)
    assert xtr.dtype == xte.dtype == torch.uint8 and ytr.dtype == torch.int64
    allx = torch.cat([xtr, xte])
    assert torch.equal(torch.unique(allx), torch.arange(17, dtype=torch.uint8))  # levels 0..16
    ref = load_digits()
    assert np.array_equal(allx[:, 0].numpy().astype(np.float64), ref.images)
    assert np.array_equal(torch.cat([ytr, yte]).numpy(), ref.target)
    assert set(yte.tolist()) == set(range(10))
    assert _shape_levels("digits") == ((1, 8, 8), 17)


def test_digits_loaders_and_sharding() -> None:
    lo = D.make_loaders("digits", None, 64, 100, seed=1)
    x, y = next(iter(lo.train))
    assert x.shape == (64, 1, 8, 8) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert len(lo.train) == 1350 // 64  # 150 of the 1,500 training images are held out for validation
    test = torch.cat([b for b, _ in lo.test])
    assert torch.equal(test, D.load_digits_uint8(False)[0])  # test order is the file order
    ranks = [D.make_loaders("digits", None, 64, 100, rank=r, world_size=2, seed=1) for r in range(2)]
    train_idx = [list(r.train.sampler) for r in ranks]
    assert not set(train_idx[0]) & set(train_idx[1])  # 1350 splits evenly: disjoint halves
    assert sorted(train_idx[0] + train_idx[1]) == list(range(1350))
    val_idx = [list(r.val.sampler) for r in ranks]
    assert sorted(val_idx[0] + val_idx[1]) == list(range(150))  # every validation image exactly once
    test_idx = [list(r.test.sampler) for r in ranks]
    assert sorted(test_idx[0] + test_idx[1]) == list(range(297))  # every test image exactly once
    assert next(iter(ranks[0].train))[0].shape == (32, 1, 8, 8)


def test_loader_epochs_reshuffle_and_replay() -> None:
    lo = D.make_loaders("digits", None, 100, 100, seed=3)
    e0 = [y for _, y in lo.train]
    e1 = [y for _, y in lo.train]
    assert not torch.equal(torch.cat(e0), torch.cat(e1))
    D.set_epoch(lo, 0)
    assert torch.equal(torch.cat(e0), torch.cat([y for _, y in lo.train]))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="world_size"):
        D.make_loaders("digits", None, 63, 100, rank=0, world_size=2)
    with pytest.raises(ValueError, match="rank"):
        D.make_loaders("digits", None, 64, 100, rank=2, world_size=2)
    with pytest.raises(ValueError, match="cifar10"):
        D.dataset_info("mnist")


# ------------------------------------------------------------------------------------- CIFAR10


def _cifar_image(k: int) -> np.ndarray:
    """A (3, 32, 32) uint8 image whose three planes and pixel positions are all distinguishable."""
    h, w = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    planes = [(h * 7 + w * 3 + k) % 256, (h * 5 + 2 * w + 3 * k + 100) % 256, (w * 11 + k * 13) % 256]
    return np.stack(planes).astype(np.uint8)


def _write_cifar(root: Path, n: int = 4) -> dict[str, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images = {}
    for b, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        imgs = np.stack([_cifar_image(b * n + k) for k in range(n)])
        images[name] = imgs
        entry = {
            "batch_label": f"fake {name}",
            "data": imgs.reshape(n, 3072),  # R plane, G plane, B plane, each row-major
            "labels": [(b * n + k) % 10 for k in range(n)],
            "filenames": [f"img_{b}_{k}.png" for k in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": n, "num_vis": 3072}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return images


def test_cifar10_fake_round_trips(tmp_path: Path) -> None:
    images = _write_cifar(tmp_path)
    xtr, ytr = D.load_cifar10(tmp_path, train=True, verify=False)
    xte, yte = D.load_cifar10(tmp_path, train=False, verify=False)
    assert xtr.shape == (20, 3, 32, 32) and xte.shape == (4, 3, 32, 32) and xtr.dtype == torch.uint8
    expect_tr = np.concatenate([images[f"data_batch_{i}"] for i in range(1, 6)])
    assert np.array_equal(xtr.numpy(), expect_tr)
    assert np.array_equal(xte.numpy(), images["test_batch"])
    # channel order and orientation of one known image: red plane first, row-major
    img = xtr[6].numpy()
    h, w = 5, 9
    assert img[0, h, w] == (h * 7 + w * 3 + 6) % 256
    assert img[1, h, w] == (h * 5 + 2 * w + 18 + 100) % 256
    assert img[2, h, w] == (w * 11 + 6 * 13) % 256
    assert ytr.tolist() == [k % 10 for k in range(20)] and ytr.dtype == torch.int64
    assert yte.tolist() == [(20 + k) % 10 for k in range(4)]


def test_cifar10_md5_check_rejects_fake(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    with pytest.raises(D.DatasetNotFound) as err:
        D.load_cifar10(tmp_path, train=True)  # verify=True: torchvision's md5s do not match
    assert str(tmp_path / "cifar-10-batches-py") in str(err.value)


def test_cifar10_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(D.DatasetNotFound) as err:
        D.load_cifar10(tmp_path / "nowhere", train=True, verify=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg
    for name in ("data_batch_1", "test_batch", "batches.meta"):
        assert name in msg
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no torchvision traceback
    with pytest.raises(D.DatasetNotFound):
        D.make_loaders("cifar10", tmp_path, 4, 4)


def test_cifar10_corrupted_file(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(D.DatasetNotFound, match="cifar-10-batches-py"):
        D.load_cifar10(tmp_path, train=True, verify=False)


def test_cifar10_torchvision_with_patched_integrity(tmp_path: Path, monkeypatch) -> None:
    # the plain torchvision class reads the fake once check_integrity is
    # patched where cifar.py binds it; it must agree with the project's loader
    import torchvision.datasets.cifar as tv_cifar

    _write_cifar(tmp_path)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    x, _ = D.load_cifar10(tmp_path, train=True, verify=True)
    ds = tv_cifar.CIFAR10(str(tmp_path), train=True)
    assert np.array_equal(np.asarray(ds[6][0]), x[6].permute(1, 2, 0).numpy())  # PIL image is HWC


def test_cifar10_loaders_flip(tmp_path: Path) -> None:
    images = _write_cifar(tmp_path)
    lo = D.make_loaders("cifar10", tmp_path, 4, 4, seed=0, verify=False)
    assert lo.input_shape == (3, 32, 32) and lo.n_levels == 256
    train = torch.from_numpy(np.concatenate([images[f"data_batch_{i}"] for i in range(1, 6)]))
    seen_flip = seen_plain = 0
    for _ in range(2):
        for x, y in lo.train:
            assert x.dtype == torch.uint8 and x.shape == (4, 3, 32, 32)
            for img, label in zip(x, y):
                # labels were k % 10 for image k; find the image among those with that label
                cands = [k for k in range(20) if k % 10 == label]
                plain = any(torch.equal(img, train[k]) for k in cands)
                flipped = any(torch.equal(img, train[k].flip(-1)) for k in cands)
                assert plain or flipped
                seen_plain += plain
                seen_flip += flipped
    assert seen_flip > 0 and seen_plain > 0
    test = torch.cat([x for x, _ in lo.test])
    assert torch.equal(test, torch.from_numpy(images["test_batch"]))  # no flips at test time


# ---------------------------------------------------------------------------------- ImageNet32


def _write_imagenet(root: Path, n: int = 3, n_val: int = 5) -> tuple[np.ndarray, np.ndarray]:
    folder = root / "imagenet32"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    all_x, all_y = [], []
    for b in range(1, 11):
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = rng.integers(1, 1001, n)
        np.savez(folder / f"train_data_batch_{b}.npz", data=x, labels=list(y), mean=x.mean(0))
        all_x.append(x)
        all_y.append(y)
    xv = rng.integers(0, 256, (n_val, 3072), dtype=np.uint8)
    yv = np.array([1, 1000, 5, 17, 2])[:n_val]
    np.savez_compressed(folder / "val_data.npz", data=xv, labels=yv)
    return np.concatenate(all_x + [xv]), np.concatenate(all_y + [yv])


def test_imagenet32_fake_round_trips(tmp_path: Path) -> None:
    raw_x, raw_y = _write_imagenet(tmp_path)
    for cache in (True, False):
        xtr, ytr = D.load_imagenet32(tmp_path, train=True, cache=cache)
        xv, yv = D.load_imagenet32(tmp_path, train=False, cache=cache)
        assert xtr.shape == (30, 3, 32, 32) and xv.shape == (5, 3, 32, 32) and xtr.dtype == torch.uint8
        assert np.array_equal(xtr.numpy(), raw_x[:30].reshape(30, 3, 32, 32))
        assert np.array_equal(xv.numpy(), raw_x[30:].reshape(5, 3, 32, 32))
        # layout: sub-pixel (c, h, w) of an image is entry c*1024 + h*32 + w of its row
        assert xtr[4, 2, 7, 30].item() == raw_x[4, 2 * 1024 + 7 * 32 + 30]
        assert np.array_equal(ytr.numpy(), raw_y[:30] - 1) and yv.tolist() == [0, 999, 4, 16, 1]
    cache_file = tmp_path / "imagenet32" / "cache" / "train_images_uint8.npy"
    assert cache_file.is_file()
    stamp = cache_file.stat().st_mtime_ns
    D.load_imagenet32(tmp_path, train=True)
    assert cache_file.stat().st_mtime_ns == stamp  # the cache is reused, not rebuilt


def test_imagenet32_loaders_pickle_lazily(tmp_path: Path) -> None:
    raw_x, _ = _write_imagenet(tmp_path)
    lo = D.make_loaders("imagenet32", tmp_path, 6, 5, seed=0)
    ds = lo.train.dataset
    assert len(pickle.dumps(ds)) < 3 * 1024  # the memory map travels as its path, not its bytes
    ds2 = pickle.loads(pickle.dumps(ds))
    assert torch.equal(ds2[3][0], ds[3][0])
    k = int(ds.indices[3])  # the fourth image kept for training
    assert torch.equal(ds[3][0], torch.from_numpy(raw_x[k].reshape(3, 32, 32)))  # no flips on ImageNet32
    test = torch.cat([x for x, _ in lo.test])
    assert np.array_equal(test.numpy(), raw_x[30:].reshape(5, 3, 32, 32))


def test_imagenet32_missing_and_corrupted(tmp_path: Path) -> None:
    with pytest.raises(D.DatasetNotFound) as err:
        D.load_imagenet32(tmp_path, train=True)
    assert str(tmp_path / "imagenet32") in str(err.value) and "\n" not in str(err.value)
    _write_imagenet(tmp_path)
    (tmp_path / "imagenet32" / "train_data_batch_7.npz").unlink()
    with pytest.raises(D.DatasetNotFound, match="train_data_batch_7.npz"):
        D.load_imagenet32(tmp_path, train=True)
    (tmp_path / "imagenet32" / "val_data.npz").write_bytes(b"garbage")
    with pytest.raises(D.DatasetNotFound, match="val_data.npz"):
        D.load_imagenet32(tmp_path, train=False, cache=False)


# ------------------------------------------------------------------------- one copy per node


def _all_batches(root: Path, name: str, rank: int, share: bool, workers: int, maps: list | None = None) -> list[bytes]:
    """Every batch rank ``rank`` of 2 reads in two training epochs, validation and test, as bytes;
    ``maps`` receives the files this process has memory-mapped while the loaders are alive."""
    lo = D.make_loaders(name, root, 4, 4, rank, 2, seed=3, num_workers=workers, verify=False, share=share)
    out = []
    for epoch in (0, 1):
        lo.train.set_epoch(epoch)
        out += [x.numpy().tobytes() + y.numpy().tobytes() for x, y in lo.train]
    for loader in (lo.val, lo.test):
        out += [x.numpy().tobytes() + y.numpy().tobytes() for x, y in loader]
    if maps is not None:
        maps += [line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines() if ".npy" in line]
    return out


def _rank_reads(root: str, name: str, rank: int, queue) -> None:  # noqa: ANN001  (a spawned process)
    mapped: list[str] = []
    batches = _all_batches(Path(root), name, rank, True, 0, mapped)
    queue.put((rank, batches, mapped))


@pytest.mark.parametrize("name", ["cifar10", "imagenet32"])
def test_node_shared_arrays_give_every_rank_the_bytes_of_a_private_copy(tmp_path: Path, name: str) -> None:
    import multiprocessing as mp

    if name == "cifar10":
        _write_cifar(tmp_path, n=12)  # 60 training images, 12 test
    else:
        _write_imagenet(tmp_path, n=6)  # 60 training images, 5 test
    private = {r: _all_batches(tmp_path, name, r, False, 0) for r in (0, 1)}
    assert all(len(b) > 8 for b in private.values()) and private[0] != private[1]
    ctx = mp.get_context("spawn")  # two fresh processes, as Ray starts a node's workers
    queue = ctx.Queue()
    procs = [ctx.Process(target=_rank_reads, args=(str(tmp_path), name, r, queue)) for r in (0, 1)]
    for p in procs:
        p.start()
    shared = {}
    for _ in procs:
        rank, batches, mapped = queue.get(timeout=120)
        shared[rank] = batches
        cache = tmp_path / {"cifar10": D.CIFAR10_FOLDER, "imagenet32": D.IMAGENET32_FOLDER}[name] / "cache"
        # each process reads the node's one file through a memory map, not a copy of its own
        assert str(cache / "train_images_uint8.npy") in mapped, mapped
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert shared == private
    assert _all_batches(tmp_path, name, 1, True, 2) == private[1]  # and through two loader processes


def test_cache_is_built_once_by_one_of_many_processes(tmp_path: Path) -> None:
    import multiprocessing as mp

    _write_imagenet(tmp_path, n=6)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=D.load_imagenet32, args=(str(tmp_path), True)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    cache = tmp_path / "imagenet32" / "cache"
    assert sorted(f.name for f in cache.iterdir() if not f.name.startswith(".")) == [
        "train_images_uint8.npy", "train_labels_int64.npy"]  # no temporary file left behind
    x, _ = D.load_imagenet32(tmp_path, train=True, cache=False)
    assert np.array_equal(np.load(cache / "train_images_uint8.npy"), x.numpy())


def test_default_loader_workers_follow_the_reserved_cpus() -> None:
    assert D.default_loader_workers("imagenet32", 12.0, on_gpu=True) == D.MAX_LOADER_WORKERS
    assert D.default_loader_workers("cifar10", 2.0, on_gpu=True) == 1  # one CPU stays with the step
    assert D.default_loader_workers("cifar10", 1.0, on_gpu=True) == 0
    assert D.default_loader_workers("cifar10", 12.0, on_gpu=False) == 0  # a CPU step uses every core
    assert D.default_loader_workers("digits", 12.0, on_gpu=True) == 0
    assert D.default_loader_workers("moons", 12.0, on_gpu=True) == 0
    assert D.default_loader_workers("imagenet32", None, on_gpu=True) == 0


# ------------------------------------------------------------------------------ dequantisation


@pytest.mark.parametrize("n_levels", [17, 256])
def test_dequantize_range_and_inverse(n_levels: int) -> None:
    p = torch.arange(n_levels, dtype=torch.uint8).repeat(2000)
    x = D.dequantize(p, n_levels, generator=torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and (x >= 0).all() and (x < 1).all()
    # every point stays inside its own bin [p/n, (p+1)/n), even where float32 rounds p + u up to p + 1
    scaled = x.double() * n_levels
    assert (scaled < p.double() + 1).all() and (scaled > p.double() - 1e-5).all()
    if n_levels == 256:  # p/256 is exact in float32: floor recovers the level exactly
        assert torch.equal(torch.floor(scaled).long(), p.long())
    # E[(p + u) / n] = (p + 1/2) / n: per level, 2000 draws give a standard error of 0.29 / (n sqrt 2000)
    means = x.view(2000, n_levels).double().mean(0)
    expect = (torch.arange(n_levels, dtype=torch.float64) + 0.5) / n_levels
    assert (means - expect).abs().max() < 5 * 0.2887 / (n_levels * math.sqrt(2000))


def test_dequantize_top_level_stays_below_one() -> None:
    # u within 2^-24 of 1 rounds (255 + u) / 256 up to 1.0 in float32; the result must stay < 1
    gen = torch.Generator().manual_seed(1)
    x = D.dequantize(torch.full((4_000_000,), 255, dtype=torch.uint8), 256, generator=gen)
    assert x.max().item() < 1.0


def test_dequantize_seeded_and_typed() -> None:
    p = torch.randint(0, 256, (8, 3, 4, 4), dtype=torch.uint8)
    a = D.dequantize(p, 256, torch.Generator().manual_seed(7))
    b = D.dequantize(p, 256, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.shape == p.shape
    assert D.dequantize(p, 256, dtype=torch.float64).dtype == torch.float64
    with pytest.raises(TypeError):
        D.dequantize(p.float(), 256)


def _shape_levels(name: str):
    info = D.dataset_info(name)
    return info.shape, info.n_levels


def test_dataset_info() -> None:
    assert _shape_levels("cifar10") == ((3, 32, 32), 256)
    assert _shape_levels("imagenet32") == ((3, 32, 32), 256)
    assert _shape_levels("CIFAR10") == ((3, 32, 32), 256)
    for name in D.TOY_SETS:
        assert _shape_levels(name) == ((2,), None)


def test_workers_give_the_same_batches(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    batches = []
    for workers in (0, 2):
        lo = D.make_loaders("cifar10", tmp_path, 4, 4, seed=2, num_workers=workers, verify=False)
        lo.train.set_epoch(5)
        batches.append([x for x, _ in lo.train])
    assert all(torch.equal(a, b) for a, b in zip(*batches)) and len(batches[0]) == 18 // 4  # 2 of 20 held out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_dequantize_on_gpu_matches_range() -> None:
    p = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8).cuda()
    x = D.dequantize(p, 256, torch.Generator(device="cuda").manual_seed(0))
    assert x.is_cuda and torch.equal(torch.floor(x.double() * 256).long(), p.long())


# ---------------------------------------------------------------------------------- validation
def _rows(batches) -> set[bytes]:  # noqa: ANN001
    return {x.numpy().tobytes() for b, _ in batches for x in b}


def test_validation_split_sizes_are_a_tenth_at_most_ten_thousand() -> None:
    for n, n_val in [(1500, 150), (50_000, 5_000), (1_281_167, 10_000), (20, 2)]:
        keep, val = D.validation_indices(n)
        assert len(val) == n_val and len(keep) == n - n_val
        assert not set(keep.tolist()) & set(val.tolist()) and len(set(keep.tolist()) | set(val.tolist())) == n
    assert np.array_equal(D.validation_indices(1500)[1], D.validation_indices(1500)[1])  # fixed, not seeded
    with pytest.raises(ValueError, match="tenth"):
        D.validation_indices(9)


@pytest.mark.parametrize("name", ["moons", "digits", "cifar10", "imagenet32"])
def test_validation_is_disjoint_from_train_and_test(name: str, tmp_path: Path) -> None:
    """Every data set's validation items: none trained on, none in the test set, the same whatever
    the training seed; images: training and validation together are exactly the training split."""
    root = None
    if name == "cifar10":
        _write_cifar(tmp_path, n=6)
        root = tmp_path
    elif name == "imagenet32":
        _write_imagenet(tmp_path, n=4)
        root = tmp_path
    kw = {"verify": False} if name == "cifar10" else {}
    bs = 500 if name == "moons" else 1
    lo = D.make_loaders(name, root, bs, bs, seed=0, toy_batches_per_epoch=4, **kw)
    val, test = _rows(lo.val), _rows(lo.test)
    assert val and not val & test
    assert val == _rows(D.make_loaders(name, root, bs, bs, seed=7, toy_batches_per_epoch=4, **kw).val)
    train: set[bytes] = set()
    for epoch in range(2 if name == "cifar10" else 1):  # CIFAR10 flips: compare unflipped epochs' images too
        lo.train.set_epoch(epoch)
        train |= _rows(lo.train)
    assert not val & train
    if name != "moons":
        full = D.load_digits_uint8(True)[0] if name == "digits" else (
            D.load_cifar10(root, True, verify=False)[0] if name == "cifar10" else D.load_imagenet32(root, True)[0])
        split = {x.numpy().tobytes() for x in full}
        assert val <= split and len(_rows(lo.val)) == min(len(full) // 10, D.VALIDATION_MAX) or name == "digits"
