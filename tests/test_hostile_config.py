"""Untrusted config.json: every malformed or oversized config ends in one line, fast, before anything is built."""

from __future__ import annotations

import copy
import json
import math
import random
import time

import pytest

from vqdraw import VQDraw
from vqdraw.core.config import PRESETS, ModelConfig, RefinerConfig, TrainConfig
from vqdraw.errors import CheckpointError, ConfigError
from vqdraw.core.sizing import MAX_ACTIVATION_BYTES, MAX_PARAMETERS, check_size, estimate_size
from vqdraw.core.validate import (
    MAX_JSON_BYTES,
    check_envelope,
    check_model_dict,
    parse_json,
    read_json,
    read_model_config,
)

MNIST = PRESETS["mnist"].model.to_dict()


def model_dict(**changes) -> dict:
    """The MNIST preset's config dict (as in config.json) with changes; ``r_x`` changes refiner field x."""
    d = json.loads(json.dumps(MNIST))
    for key, value in changes.items():
        if key.startswith("r_"):
            d["refiner"][key[2:]] = value
        else:
            d[key] = value
    return d


def assert_one_line(exc: BaseException, match: str = "") -> None:
    text = str(exc)
    assert text and "\n" not in text and len(text) < 300, text
    assert match in text, text


BAD_MODELS = {
    "a string": ("big", "must be a JSON object"),
    "a list": ([1, 2], "must be a JSON object"),
    "empty object": ({}, "lacks data_shape, options, stages"),
    "options as a string": (model_dict(options="64"), "options: must be an integer"),
    "options as a list": (model_dict(options=[64]), "options: must be an integer"),
    "options as a bool": (model_dict(options=True), "options: must be an integer"),
    "options 1e9 (float)": (model_dict(options=1e9), "options: must be an integer"),
    "options 10**9": (model_dict(options=10**9), "options: must be in 2..65535"),
    "stages 10**9": (model_dict(stages=10**9), "stages: must be in 1..65535"),
    "stages 0": (model_dict(stages=0), "stages: must be in"),
    "res_blocks 10**6": (model_dict(r_res_blocks=10**6), "res_blocks: must be in 0..1024"),
    "4096x4096 image": (model_dict(image_shape=[1, 4096, 4096]), "parameters"),
    "many stages, one per segment": (model_dict(stages=65535, segment=1), "parameters"),
    "huge K for the image": (model_dict(options=65535, image_shape=[1, 512, 512]), "parameters"),
    "negative down kernel": (model_dict(r_down_kernel=-3), "down_kernel: must be in 1..31"),
    "even head kernel": (model_dict(r_head_kernel=4), "must be odd"),
    "negative expansion": (model_dict(r_res_expand=-1), "res_expand: must be in 1..64"),
    "negative channels": (model_dict(r_body=[128, -1]), "body[1]: must be in"),
    "channels as floats": (model_dict(r_body=[128.5]), "body[0]: must be an integer"),
    "refiner as a string": (model_dict(refiner="big"), "refiner: must be a JSON object"),
    "refiner as a list": (model_dict(refiner=[1]), "refiner: must be a JSON object"),
    "refiner unknown field": (model_dict(r_layers=9), "unknown field(s) 'layers'"),
    "unknown field": (model_dict(colour="red"), "unknown field(s) 'colour'"),
    "shape as a string": (model_dict(image_shape="28x28"), "image_shape: must be a list"),
    "shape of rank 1": (model_dict(image_shape=[28]), "image_shape"),
    "shape of rank 5": (model_dict(image_shape=[1, 2, 4, 4, 4]), "image_shape"),
    "shape with a zero": (model_dict(image_shape=[1, 0, 28]), "image_shape[1]"),
    "NaN mean": (model_dict(mean=[math.nan]), "mean[0]: must be a finite number"),
    "infinite std": (model_dict(std=[math.inf]), "std[0]: must be a finite number"),
    "zero std": (model_dict(std=[0.0]), "std[0]: must be in"),
    "NaN output scale": (model_dict(r_output_scale=math.nan), "output_scale: must be a finite number"),
    "group_norm as a number": (model_dict(r_group_norm=1), "group_norm: must be true or false"),
    "17 downsamplings": (model_dict(r_down=[1] * 17, r_up=[1] * 17), "down: at most 16 entries"),
    "mean of the wrong length": (model_dict(mean=[0.1, 0.2]), "mean and std need 1 values"),
    "up/down mismatch": (model_dict(r_up=[64]), "downsampling layers need as many"),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_bad_model_config_is_one_line_config_error(case):
    d, match = BAD_MODELS[case]
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:  # as VQDraw.load does: the dict's fields, then its size
        VQDraw(ModelConfig.from_dict(d))
    assert time.perf_counter() - start < 1.0
    assert_one_line(info.value, match)


def test_checks_run_directly_on_the_raw_dict():
    with pytest.raises(ConfigError, match="options: must be in"):
        check_model_dict(model_dict(options=1), ModelConfig)
    check_model_dict(MNIST, ModelConfig)  # the preset passes


def test_presets_pass_and_round_trip():
    for preset in PRESETS.values():
        assert ModelConfig.from_dict(preset.model.to_dict()) == preset.model
        assert TrainConfig.from_dict(preset.train.to_dict()) == preset.train
        check_size(preset.model, preset.train.micro)


BAD_TRAINS = {
    "steps as a string": ({"steps": "10"}, "steps: must be an integer"),
    "batch 1e12": ({"batch": 10**12}, "batch: must be in"),
    "batch as a float": ({"batch": 32.0}, "batch: must be an integer"),
    "NaN lr": ({"lr": math.nan}, "lr: must be a finite number"),
    "negative lr": ({"lr": -1.0}, "lr: must be in"),
    "lr_final as a list": ({"lr_final": [1]}, "lr_final"),
    "alpha inf": ({"alpha": math.inf}, "alpha: must be a finite number"),
    "dataset as a number": ({"dataset": 3}, "dataset: must be a string"),
    "grad_checkpoint as a string": ({"grad_checkpoint": "yes"}, "must be true or false"),
    "unknown field": ({"epochs": 3}, "unknown field(s) 'epochs'"),
    "a list": ([], "must be a JSON object"),
}


@pytest.mark.parametrize("case", sorted(BAD_TRAINS))
def test_bad_train_config_is_one_line_config_error(case):
    d, match = BAD_TRAINS[case]
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(d)
    assert_one_line(info.value, match)


def test_lr_final_none_is_accepted():
    assert TrainConfig.from_dict({"lr_final": None}).lr_final is None


# --- size estimate ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_estimate_counts_the_presets_parameters_exactly(name):
    cfg = PRESETS[name].model
    est = estimate_size(cfg, 1)
    assert est["parameters"] == sum(p.numel() for p in VQDraw(cfg).parameters())
    assert est["bytes"] == 4 * (est["parameters"] + est["activations"])
    assert est["activations"] > 3 * cfg.options * math.prod(cfg.data_shape)  # at least the K proposals


def test_estimate_counts_an_odd_architecture_exactly():
    cfg = ModelConfig(
        (3, 16, 16), options=5, stages=7, segment=3, mean=(0.0,) * 3, std=(1.0,) * 3,
        refiner=RefinerConfig(down=(8,), up=(4,), body=(), pre_head=(6,), res_blocks=2, res_expand=3,
                              down_kernel=5, head_kernel=1, head_per_stage=True, group_norm=True),
    )
    assert estimate_size(cfg)["parameters"] == sum(p.numel() for p in VQDraw(cfg).parameters())
    assert estimate_size(cfg.to_dict()) == estimate_size(cfg)


def test_activation_limit_depends_on_the_batch():
    cfg = model_dict(image_shape=[3, 1024, 1024], mean=[0.5] * 3, std=[0.5] * 3, options=4)
    ModelConfig.from_dict(cfg)  # one image fits
    per_image = estimate_size(ModelConfig.from_dict(cfg), 1)["activations"] * 4
    batch = MAX_ACTIVATION_BYTES // per_image + 1
    with pytest.raises(ConfigError, match="GiB of activations per stage for a batch of"):
        check_size(ModelConfig.from_dict(cfg), batch)


def test_limits_are_documented_sizes():
    assert MAX_PARAMETERS == 2**28 and MAX_ACTIVATION_BYTES == 2**32


# --- JSON files ------------------------------------------------------------------------------------


def write(tmp_path, text: str | bytes, name="config.json"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def envelope(model) -> str:
    return json.dumps({"format": "vqdraw-model", "version": 1, "model": model})


BAD_FILES = {
    "deeply nested": ("[" * 100_000 + "]" * 100_000, CheckpointError, "nested"),
    "nested 40 deep": ('{"format": "vqdraw-model", "version": 1, "model": ' + "[" * 40 + "]" * 40 + "}",
                       CheckpointError, "nested deeper than 32"),
    "over 1 MiB": (" " * (MAX_JSON_BYTES + 1), CheckpointError, "larger than"),
    "not UTF-8": (b"\xff\xfe{}", CheckpointError, "not UTF-8"),
    "not JSON": ("{format: 1", CheckpointError, "not valid JSON"),
    "NaN literal": ('{"format": "vqdraw-model", "version": 1, "model": {"options": NaN}}', CheckpointError,
                    "non-finite number NaN"),
    "huge integer": ('{"version": ' + "9" * 5000 + "}", CheckpointError, "not valid JSON"),
    "a list": ("[]", CheckpointError, "not a vqdraw-model file"),
    "wrong format": ('{"format": "other", "model": {}}', CheckpointError, "not a vqdraw-model file"),
    "version as a string": ('{"format": "vqdraw-model", "version": "1", "model": {}}', CheckpointError,
                            "format version must be a non-negative integer"),
    "version from the future": ('{"format": "vqdraw-model", "version": 99, "model": {}}', CheckpointError,
                                "newer vqdraw"),
    "model as a string": ('{"format": "vqdraw-model", "version": 1, "model": "x"}', CheckpointError,
                          "no model config object"),
    "model empty": (envelope({}), ConfigError, "lacks"),
    "options 1e9": (envelope(model_dict(options=1e9)), ConfigError, "options: must be an integer"),
    "res_blocks 1e6": (envelope(model_dict(r_res_blocks=1_000_000)), ConfigError, "res_blocks"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_config_file_is_one_line(tmp_path, case):
    text, kind, match = BAD_FILES[case]
    path = write(tmp_path, text)
    start = time.perf_counter()
    with pytest.raises(kind) as info:
        read_model_config(path, ModelConfig, "vqdraw-model", 1)
    assert time.perf_counter() - start < 5.0
    assert_one_line(info.value, match)


def test_read_json_refuses_a_folder_and_a_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="missing or not a regular file"):
        read_json(tmp_path)
    with pytest.raises(CheckpointError, match="missing or not a regular file"):
        read_json(tmp_path / "nope.json")


def test_good_config_file_loads(tmp_path):
    path = write(tmp_path, envelope(MNIST))
    assert read_model_config(path, ModelConfig, "vqdraw-model", 1) == PRESETS["mnist"].model
    assert check_envelope({"format": "f", "model": {}}, "f", 1) == {}  # version defaults to 0


# --- fuzz ------------------------------------------------------------------------------------------

NASTY = [None, True, False, 0, -1, 1, 2, 3, 7, 2**31, 10**9, 2**70, -(2**70), 0.5, -0.0, 1e9, 1e308, -1e308,
         math.nan, math.inf, -math.inf, "", "64", "x" * 10_000, [], [1], [0], [-5], [1, 28, 28], [3, 4096, 4096],
         [1.5, 2], ["a"], [[1]], {}, {"a": 1}, [[[[[[[[]]]]]]]], [1] * 100, {"down": [1] * 17}]


def _paths(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


def _mutate(d, rng: random.Random):
    d = copy.deepcopy(d)
    for _ in range(rng.randint(1, 3)):
        paths = list(_paths(d))
        if not paths or rng.random() < 0.05:
            return rng.choice(NASTY)
        path = rng.choice(paths)
        parent = d
        for step in path[:-1]:
            parent = parent[step]
        kind = rng.random()
        if kind < 0.6:
            parent[path[-1]] = copy.deepcopy(rng.choice(NASTY))
        elif kind < 0.75 and isinstance(parent, dict):
            del parent[path[-1]]
        elif kind < 0.9 and isinstance(parent, dict):
            parent[rng.choice(["extra", "version", "likelihood", "data_shape"])] = rng.choice(NASTY)
        else:  # a small numeric nudge keeps the value plausible
            value = parent[path[-1]]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                parent[path[-1]] = value * rng.choice([-1, 0, 2, 1000, 0.5])
    return d


def test_fuzz_model_and_train_configs():
    """A few hundred mutated presets through JSON text: only ConfigError/CheckpointError, all fast;
    what is accepted is within the limits, and the small ones build."""
    rng = random.Random(17)
    seeds = [p.model.to_dict() for p in PRESETS.values()]
    trains = [p.train.to_dict() for p in PRESETS.values()]
    start = time.perf_counter()
    accepted = built = 0
    for i in range(400):
        is_model = i % 4 != 3
        d = _mutate(rng.choice(seeds if is_model else trains), rng)
        text = json.dumps(d)  # NaN/Infinity become JSON literals, refused by parse_json
        try:
            obj = parse_json(text)
            cfg = ModelConfig.from_dict(obj) if is_model else TrainConfig.from_dict(obj)
        except (ConfigError, CheckpointError) as exc:
            assert_one_line(exc)
            continue
        accepted += 1
        if is_model:
            try:
                check_size(cfg)
            except ConfigError as exc:
                assert_one_line(exc, "parameters")
                continue
            est = estimate_size(cfg)
            assert est["parameters"] <= MAX_PARAMETERS
            if est["parameters"] < 2_000_000 and built < 20:
                model = VQDraw(cfg)
                assert sum(p.numel() for p in model.parameters()) == est["parameters"]
                built += 1
    print(f"fuzz: {accepted} of 400 accepted, {built} built")
    assert 0 < accepted < 400 and built > 0
    assert time.perf_counter() - start < 30.0


@pytest.mark.parametrize("likelihood", ["gaussian", "categorical", "discretized-logistic", "bernoulli"])
def test_estimate_counts_other_likelihoods_parameters_exactly(likelihood):
    from vqdraw import VQDraw
    from vqdraw.core.sizing import estimate_size

    model = VQDraw.from_preset("mnist", likelihood=likelihood, options=8, stages=3, segment=2)
    assert estimate_size(model.config)["parameters"] == sum(p.numel() for p in model.parameters())


def test_estimate_counts_a_progressive_refiners_parameters_exactly():
    from vqdraw import VQDraw
    from vqdraw.core.config import RefinerConfig
    from vqdraw.core.sizing import estimate_size

    model = VQDraw.from_preset("mnist", options=8, stages=4, segment=2,
                               refiner=RefinerConfig(down=(8, 16), body=(16,), up=(16, 8), progressive=1))
    assert estimate_size(model.config)["parameters"] == sum(p.numel() for p in model.parameters())


def test_building_a_model_sizes_it_without_pytorchs_compiler_stack():
    """Sizing on the meta device must not cost every command a second: building (and so loading)
    a model imports no torch._dynamo; only measuring activations for a batch may."""
    import subprocess
    import sys

    code = ("import sys; from vqdraw import VQDraw; VQDraw.from_preset('mnist'); VQDraw.from_preset('text'); "
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
