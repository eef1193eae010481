"""ForecasterConfig: defaults, JSON round trip and clear errors."""

from __future__ import annotations

import json

import pytest

from forecaster import ForecasterConfig


def test_defaults_follow_the_seed_where_the_contract_says_so():
    config = ForecasterConfig()
    assert (config.window, config.horizon, config.units, config.layers) == (7, 7, 256, 1)
    assert (config.learning_rate, config.clipnorm, config.max_epochs) == (1e-3, 4.0, 200)
    assert config.target == "logreturn"
    assert config.interval_levels == (0.8, 0.95)
    assert config.mixed_precision is False


def test_json_round_trip_gives_an_equal_config():
    config = ForecasterConfig(horizon=3, features=("close", "range"), interval_levels=(0.5, 0.9))
    stored = json.loads(json.dumps(config.to_dict()))
    assert ForecasterConfig.from_dict(stored) == config


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        ForecasterConfig().window = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("window", 0),
        ("horizon", -1),
        ("units", 2.5),
        ("batch_size", True),
        ("learning_rate", 0),
        ("dropout", 1.0),
        ("validation_fraction", 1.0),
        ("target", "price"),
        ("features", ("range",)),
        ("features", ("close", "close")),
        ("interval_levels", (0.8, 1.2)),
        ("patience", -1),
        ("mixed_precision", "yes"),
        ("series_interval_windows", 0),
        ("group_finetune_windows", 0),
        ("series_embedding", -1),
    ],
)
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ForecasterConfig(**{field: value})


def test_unknown_keys_are_rejected_by_from_dict():
    with pytest.raises(ValueError, match="unknown ForecasterConfig keys \\['colour'\\]"):
        ForecasterConfig.from_dict({"colour": "red"})


def test_interval_names_follow_the_levels():
    names = ForecasterConfig(interval_levels=(0.8, 0.975)).interval_names
    assert names == [(0.8, "lower_80", "upper_80"), (0.975, "lower_97.5", "upper_97.5")]
