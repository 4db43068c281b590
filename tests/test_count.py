"""The closed-form parameter counter: the paper's exact counts, and equality with the numel of the
built model over a seeded sweep of configurations of every kind the model library accepts."""

from __future__ import annotations

import random

import pytest

from model import ModelConfig, toy_config, model_config
from reference_counts import CIFAR10_COUNTS, IMAGENET32_COUNTS, TOY_COUNTS
from search_spaces.count import count_fields, count_parameters

REFERENCE = CIFAR10_COUNTS + IMAGENET32_COUNTS


@pytest.mark.parametrize("kwargs,expected", REFERENCE)
def test_counts_of_the_paper_models(kwargs, expected):
    assert count_parameters(model_config(**kwargs)) == expected


@pytest.mark.parametrize("kwargs,expected", TOY_COUNTS)
def test_counts_of_the_toy_models(kwargs, expected):
    assert count_parameters(toy_config(**kwargs)) == expected


def test_fields_outside_count_fields_leave_the_count_unchanged():
    cfg = model_config(blocks_per_scale=(4, 4, 4))
    changed = cfg.replace(
        eta_init=(0.3, 2.0), lc_start_epoch=0, lip_coeff=0.9, sn_coeff=0.5, logit_alpha=0.01, n_levels=17,
        n_exact_terms=5, n_dist="geometric", neumann_grad=False, mem_eff=False, sn_train_iters=3,
    )
    assert count_parameters(changed) == count_parameters(cfg)
    assert "growth" in count_fields() and "eta_init" not in count_fields()


def test_blocks_beyond_the_number_of_scales_are_ignored():
    """8×8 digits have 2 scales (8×8, 4×4): a third entry adds nothing."""
    cfg = model_config(input_shape=(1, 8, 8), blocks_per_scale=(2, 2), depth=2, growth=10)
    assert cfg.n_scales == 2
    assert count_parameters(cfg.replace(blocks_per_scale=(2, 2, 7))) == count_parameters(cfg)
    assert count_parameters(cfg.replace(blocks_per_scale=(2, 3))) > count_parameters(cfg)


def test_depth_one_dense_block_by_hand():
    """One i-DenseNet conv block, d = 1, LipSwish, LC, on a 1×4×4 image, nothing else:
    conv3×3 (1 → k) 9k + k, conv1×1 (1 + k → 1) (1 + k) + 1, LC 2, β 1, (geom_p, lamb) 2."""
    k = 5
    cfg = model_config(input_shape=(1, 4, 4), blocks_per_scale=(1,), activation="lipswish", depth=1,
                      growth=k, fc_blocks=0, actnorm=False)
    assert count_parameters(cfg) == 9 * k + k + (1 + k) + 1 + 2 + 1 + 2


# ------------------------------------------------------------------ property test against building
def _random_config(rng: random.Random) -> ModelConfig:
    family = rng.choice(["idensenet", "resflow"])
    activation = rng.choice(["lipswish", "clipswish", "leakylswish"])
    a = 2 if activation == "clipswish" else 1
    kind = rng.choices(["toy", "digits", "cifar"], weights=[4, 4, 2])[0]
    kw: dict = dict(
        family=family, activation=activation, depth=rng.randint(1, 5),
        learnable_concat=rng.random() < 0.5, actnorm=rng.random() < 0.5, fc_blocks=rng.randint(0, 4),
        fc_growth=a * rng.randint(1, 8), fc_width=rng.randint(1, 40),
        hidden=a * rng.randint(1, 24), fc_hidden=a * rng.randint(1, 24),
        toy_hidden=tuple(a * rng.randint(1, 24) for _ in range(rng.randint(1, 4))),
    )
    if kind == "toy":
        kw.update(input_shape=(rng.choice([2, 2, 3]),), blocks_per_scale=(rng.randint(1, 4),),
                  growth=a * rng.randint(1, 40))
    elif kind == "digits":
        kw.update(input_shape=(1, 8, 8), blocks_per_scale=tuple(rng.randint(1, 3) for _ in range(rng.randint(1, 3))),
                  growth=a * rng.randint(1, 20))
    else:
        kw.update(input_shape=(3, 32, 32), blocks_per_scale=tuple(rng.randint(1, 2) for _ in range(rng.randint(1, 3))),
                  growth=a * rng.randint(1, 6), fc_blocks=rng.randint(0, 2), hidden=a * rng.randint(1, 8))
    return model_config(**kw)


N_RANDOM = 300


def test_random_configs_cover_every_kind():
    rng = random.Random(1234)
    cfgs = [_random_config(rng) for _ in range(N_RANDOM)]
    seen = {(c.family, c.activation, getattr(c.arch, "learnable_concat", None), c.actnorm, len(c.input_shape)) for c in cfgs}
    # i-DenseNets: 3 activations x LC on/off x ActNorm on/off x toy/image; Residual Flows have no LC
    assert len(seen) == 3 * 2 * 2 * 2 + 3 * 2 * 2
    assert {c.fc_blocks for c in cfgs} == {0, 1, 2, 3, 4}
    assert {c.arch.depth for c in cfgs if c.family == "idensenet"} == {1, 2, 3, 4, 5}


def test_counter_equals_numel_of_the_built_model():
    torch = pytest.importorskip("torch")
    from model import build_model
    from model.iresblock import InvertibleResBlock

    torch.set_num_threads(1)
    rng = random.Random(1234)
    mismatches = []
    for _ in range(N_RANDOM):
        cfg = _random_config(rng)
        model = build_model(cfg)
        # the authors' count: every parameter, their never-trained geom_p / lamb included (frozen here)
        numel = sum(p.numel() for p in model.parameters())
        frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        blocks = sum(isinstance(m, InvertibleResBlock) for m in model.modules())
        assert numel == model.num_parameters() and frozen == 2 * blocks
        if numel != count_parameters(cfg):
            mismatches.append((cfg, numel, count_parameters(cfg)))
    assert not mismatches, mismatches[:3]
