"""The data sets the project knows, as one torch-free table read by configs, loaders and spaces.

Images are dequantised from ``n_levels`` pixel levels (paper §4, uniform dequantisation); toy sets
are continuous 2-D densities drawn fresh at every step (paper §4.1). Loaders live in
:mod:`model.data`; this table only says what shape each set has.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UserError


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    shape: tuple[int, ...]  # (C, H, W) for images, (2,) for toy densities
    n_levels: int | None  # pixel levels of an image set; None for continuous toy data

    @property
    def is_toy(self) -> bool:
        return self.n_levels is None


TOY_SETS: tuple[str, ...] = ("moons", "circles", "checkerboard", "8gaussians", "pinwheel", "2spirals")
IMAGE_SETS: tuple[str, ...] = ("digits", "cifar10", "imagenet32")

DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", (1, 8, 8), 17),  # scikit-learn's 8x8 digits, grey levels 0..16
    "cifar10": DatasetInfo("cifar10", (3, 32, 32), 256),
    "imagenet32": DatasetInfo("imagenet32", (3, 32, 32), 256),
    **{name: DatasetInfo(name, (2,), None) for name in TOY_SETS},
}


def dataset_info(name: str) -> DatasetInfo:
    """The table entry of ``name`` (case-insensitive); an unknown name is a :class:`UserError`."""
    info = DATASETS.get(str(name).lower())
    if info is None:
        raise UserError([("data", f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}")])
    return info
