"""ModelConfig: validation with one message per key, and a lossless dict round trip."""

from __future__ import annotations

import json

import pytest

from model.config import ConfigError, ModelConfig, toy_config, model_config


def test_defaults_are_the_authors_small_cifar10_idensenet():
    cfg = ModelConfig()
    assert (cfg.family, cfg.activation, cfg.arch.depth, cfg.arch.growth) == ("idensenet", "clipswish", 3, 178)
    assert cfg.blocks_per_scale == (4, 4, 4) and cfg.n_scales == 3
    assert cfg.scale_shapes() == [(3, 32, 32), (12, 16, 16), (48, 8, 8)]
    assert cfg.n_dims == 3072 and cfg.channel_mult == 2


def test_round_trip_through_json():
    cfg = toy_config(eta_init=(0.5, 2.0), learnable_concat=False)
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and hash(again) == hash(cfg)


def test_scalar_eta_init_means_both():
    assert model_config(eta_init=0.3).arch.eta_init == (0.3, 0.3)


def test_digits_shape_has_two_scales():
    cfg = model_config(input_shape=(1, 8, 8), blocks_per_scale=(2, 2, 2), n_levels=17)
    assert cfg.n_scales == 2 and cfg.scale_shapes() == [(1, 8, 8), (4, 4, 4)]


def test_every_problem_is_reported_with_its_key():
    with pytest.raises(ConfigError) as err:
        model_config(growth=177, activation="clipswish", lip_coeff=1.2, n_dist="uniform")
    msg = str(err.value)
    for key in ("growth", "lip_coeff", "n_dist"):
        assert key in msg


def test_unknown_keys_are_named():
    with pytest.raises(ConfigError, match="grwoth"):
        ModelConfig.from_dict({"grwoth": 3})
