"""Exact parameter counts of the authors' models (architecture notes §11.2; sum of numel of the
parameters that require grad, the two Russian-roulette scalars of each block included), shared by the
tests of the built models (test_flow.py) and of the closed-form counter (test_count.py)."""

IDN = dict(family="idensenet", activation="clipswish", learnable_concat=True)
RF = dict(family="resflow", activation="lipswish")

# (config, exact count); input 3x32x32
CIFAR10_COUNTS = [
    (dict(RF, blocks_per_scale=(4, 4, 4)), 8_730_441),
    (dict(IDN, blocks_per_scale=(4, 4, 4), depth=2, growth=318), 8_763_510),
    (dict(IDN, blocks_per_scale=(4, 4, 4), depth=3, growth=178), 8_695_158),
    (dict(IDN, blocks_per_scale=(4, 4, 4), depth=4, growth=122), 8_724_302),
    (dict(IDN, blocks_per_scale=(4, 4, 4), depth=5, growth=92), 8_839_086),
    (dict(IDN, blocks_per_scale=(4, 4, 4), depth=3, growth=178, learnable_concat=False), 8_695_062),
    (dict(IDN, blocks_per_scale=(4, 4, 4), depth=3, growth=124, activation="lipswish"), 8_761_374),
    (dict(IDN, blocks_per_scale=(4, 4, 4), depth=3, growth=124, activation="leakylswish"), 8_761_422),
    (dict(RF, blocks_per_scale=(4, 4, 4), activation="clipswish", hidden=652), 8_723_831),
    (dict(RF, blocks_per_scale=(4, 4, 4), activation="leakylswish"), 8_730_488),
    (dict(RF, blocks_per_scale=(16, 16, 16)), 25_174_233),
    (dict(IDN, blocks_per_scale=(16, 16, 16), depth=3, growth=172), 24_894_690),
]
IMAGENET32_COUNTS = [
    (dict(RF, blocks_per_scale=(32, 32, 32)), 47_099_289),
    (dict(IDN, blocks_per_scale=(32, 32, 32), depth=3, growth=172), 46_981_074),
]
TOY_COUNTS = [
    (dict(), 10_250),
    (dict(learnable_concat=False), 10_190),
    (dict(activation="clipswish"), 5_690),
    (dict(growth=32), 35_690),
    (dict(family="resflow"), 501_850),
]
