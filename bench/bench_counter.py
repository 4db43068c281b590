"""Closed-form parameter count versus building the model, per configuration; prints JSON.

For each configuration: microseconds per ``count_parameters`` call (and per growth solve), seconds to
``build_model`` it on the CPU and count, and whether both counts agree.

    python bench/bench_counter.py [--skip-large] [--repeat 20000]
"""

from __future__ import annotations

import argparse
import json
import time
import timeit

from model import ModelConfig, toy_config
from search_spaces.budgets import BUDGETS
from search_spaces.count import count_parameters
from search_spaces.solver import nearest_width

IDN = dict(family="idensenet", activation="clipswish", learnable_concat=True)
CONFIGS = {
    "toy i-DN d3/g16": (toy_config(), "toy"),
    "toy ResFlow 128x4": (toy_config(family="resflow"), None),
    "digits i-DN d3/g18": (ModelConfig(**{**IDN, "activation": "lipswish"}, input_shape=(1, 8, 8), blocks_per_scale=(2, 2), growth=18,
                                       fc_width=32, fc_growth=16), "digits"),
    "cifar10 i-DN 4-4-4 d3/g178": (ModelConfig(**IDN, blocks_per_scale=(4, 4, 4), growth=178), "cifar10-small"),
    "cifar10 ResFlow 4-4-4": (ModelConfig(family="resflow", activation="lipswish", blocks_per_scale=(4, 4, 4)), "cifar10-small"),
    "cifar10 i-DN 16-16-16 d3/g172": (ModelConfig(**IDN, blocks_per_scale=(16, 16, 16), growth=172), "cifar10-full"),
    "imagenet32 i-DN 32-32-32 d3/g172": (ModelConfig(**IDN, blocks_per_scale=(32, 32, 32), growth=172), "imagenet32"),
}
LARGE = {"cifar10 i-DN 16-16-16 d3/g172", "imagenet32 i-DN 32-32-32 d3/g172"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-large", action="store_true", help="do not build the 16-16-16 and 32-32-32 models")
    parser.add_argument("--repeat", type=int, default=20000, help="counter calls timed per config")
    args = parser.parse_args()

    import torch

    from model import build_model

    torch.set_num_threads(1)
    build_model(toy_config())  # warm up imports and kernels
    rows = []
    for name, (cfg, budget) in CONFIGS.items():
        count = count_parameters(cfg)
        us = timeit.timeit(lambda: count_parameters(cfg), number=args.repeat) / args.repeat * 1e6
        row: dict = {"config": name, "count": count, "counter_us": round(us, 2)}
        if budget is not None:
            n = max(args.repeat // 20, 1)
            row["solve_us"] = round(timeit.timeit(lambda: nearest_width(cfg, BUDGETS[budget]), number=n) / n * 1e6, 1)
        if name in LARGE and args.skip_large:
            row["build_s"] = None
        else:
            t = time.perf_counter()
            model = build_model(cfg)
            numel = sum(p.numel() for p in model.parameters() if p.requires_grad)
            row["build_s"] = round(time.perf_counter() - t, 3)
            row["numel"] = numel
            row["equal"] = numel == count
            row["speedup"] = round(row["build_s"] * 1e6 / us)
            del model
        rows.append(row)
    print(json.dumps({"torch_threads": 1, "results": rows}, indent=1))


if __name__ == "__main__":
    main()
