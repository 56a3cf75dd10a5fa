"""hydra.cli: flag parsing, and how a command reports what went wrong."""

import pytest

from hydra.cli import parse_layers
from hydra.errors import ConfigError


def test_parse_layers():
    assert parse_layers("0:10") == (0, 10)
    for bad in ("10", "5:5", "a:b", "-1:3", "3:1"):
        with pytest.raises(ConfigError):
            parse_layers(bad)
