"""ModelConfig: validation that names the field, presets, and strict named constructors."""

from __future__ import annotations

import json

import pytest

from quatrain import ConfigError, ModelConfig


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"hidden_size": 0}, "hidden_size must be a positive integer"),
        ({"num_layers": 1.5}, "num_layers must be a positive integer"),
        ({"embed_dim": True}, "embed_dim must be a positive integer"),
        ({"rnn": "LSTM"}, "rnn must be one of lstm, gru, rnn; got 'LSTM'"),
        ({"attention": "self"}, "attention must be one of encoder, none"),
        ({"dropout": 1.0}, r"dropout must be a number in \[0, 1\)"),
        ({"num_heads": 5}, r"num_heads \(5\) must divide hidden_size \(32\)"),
        ({"memory_positions": "yes"}, "memory_positions must be true or false"),
    ],
    ids=lambda v: str(v) if isinstance(v, dict) else "",
)
def test_bad_values_name_the_field(change, match):
    with pytest.raises(ConfigError, match=match):
        ModelConfig.preset("tiny", **change)


def test_presets():
    seed = ModelConfig.preset("seed")
    assert (seed.embed_dim, seed.hidden_size, seed.num_layers, seed.rnn) == (300, 512, 2, "lstm")
    assert (seed.bottleneck_dim, seed.num_heads, seed.dropout, seed.max_len) == (128, 4, 0.2, 50)
    assert seed.head_dim == 128
    with pytest.raises(ConfigError, match="unknown preset 'huge'; presets: "):
        ModelConfig.preset("huge")


def test_from_dict_rejects_unknown_and_missing_keys():
    data = ModelConfig.preset("tiny").to_dict()
    assert ModelConfig.from_dict(data) == ModelConfig.preset("tiny")
    with pytest.raises(ConfigError, match="unknown config field.*use_attention"):
        ModelConfig.from_dict({**data, "use_attention": True})
    del data["hidden_size"]
    with pytest.raises(ConfigError, match="missing required field.*hidden_size"):
        ModelConfig.from_dict(data)


def test_from_json(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"preset": "tiny", "rnn": "gru"}))
    assert ModelConfig.from_json(path) == ModelConfig.preset("tiny", rnn="gru")
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        ModelConfig.from_json(path)
    path.write_text("{")
    with pytest.raises(ConfigError, match="cannot read config"):
        ModelConfig.from_json(path)


def test_frozen():
    config = ModelConfig.preset("tiny")
    with pytest.raises(AttributeError):
        config.hidden_size = 64  # type: ignore[misc]
    assert config.evolve(hidden_size=64).hidden_size == 64
