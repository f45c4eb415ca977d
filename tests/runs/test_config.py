"""TrainConfig: JSON round trip and validation messages that name the field."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pvae.runs.build import check_config
from pvae.runs.config import ConfigError, TrainConfig

CHANGED = dict(
    data_dir="/data", binarization="static", val_size=500, train_size=1000, z_dim=7, hidden=(64, 32, 16),
    activation="relu", objective="meanfield", num_particles=3, batch_size=32, epochs=4, lr=5e-4,
    lr_schedule="exponential", lr_decay=0.9, seed=11, device="cpu", out="runs/x",
)


def test_round_trip_through_dict_and_json() -> None:
    """to_dict/from_dict and to_json/json.loads/from_dict give back an equal configuration."""
    config = TrainConfig(**CHANGED)
    assert TrainConfig.from_dict(config.to_dict()) == config
    again = TrainConfig.from_dict(json.loads(config.to_json()))
    assert again == config, f"JSON round trip changed {set(config.to_dict().items()) ^ set(again.to_dict().items())}"
    assert again.hidden == (64, 32, 16) and isinstance(again.hidden, tuple), f"hidden came back as {again.hidden!r}"


def test_defaults_round_trip() -> None:
    """The default configuration survives JSON too, including train_size=None and out=None."""
    config = TrainConfig()
    assert TrainConfig.from_dict(json.loads(config.to_json())) == config


def test_unknown_keys_are_refused() -> None:
    """from_dict refuses keys that are not fields, naming them."""
    d = TrainConfig().to_dict() | {"zdim": 3, "learning_rate": 0.1}
    with pytest.raises(ConfigError, match=r"unknown configuration keys \['learning_rate', 'zdim'\]"):
        TrainConfig.from_dict(d)


def test_config_is_frozen() -> None:
    """A configuration cannot be changed in place (it is saved beside every checkpoint)."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().z_dim = 3  # type: ignore[misc]


BAD_VALUES = [
    ("dataset", "cifar"),
    ("binarization", "sometimes"),
    ("activation", "sigmoidish"),
    ("objective", "renyi-ish"),
    ("lr_schedule", "linear-ish"),
    ("device", "tpu"),
    ("prior", "nope"),
    ("likelihood", "nope"),
    ("z_dim", 0),
    ("z_dim", 2.5),
    ("z_dim", True),
    ("num_particles", 0),
    ("batch_size", -1),
    ("epochs", -3),
    ("val_size", -1),
    ("train_size", 0),
    ("hidden", ()),
    ("hidden", (200, 0)),
    ("lr", 0.0),
    ("lr", -1e-3),
    ("lr", float("nan")),
    ("lr_decay", 0.0),
    ("lr_decay", 1.5),
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES, ids=[f"{f}={v!r}" for f, v in BAD_VALUES])
def test_validation_error_names_the_field(field: str, value: object) -> None:
    """An out-of-range or unknown value is a ConfigError whose message names the field and the value."""
    with pytest.raises(ConfigError) as info:
        check_config(TrainConfig(**{field: value}))
    message = str(info.value)
    assert field in message, f"the message does not name {field!r}: {message}"
    assert str(value) in message or repr(value) in message, f"the message does not show {value!r}: {message}"

