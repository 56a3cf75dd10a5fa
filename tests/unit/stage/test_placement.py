"""hydra.stage.placement: equal shards and the least-covered window."""

import itertools

import pytest

from hydra.errors import ConfigError
from hydra.stage.placement import shard_layers


def test_shards_cover_all_layers_exactly_once():
    for total in (1, 3, 4, 7):
        spans = [shard_layers(i, total, 30) for i in range(total)]
        assert spans[0][0] == 0 and spans[-1][1] == 30
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert shard_layers(1, 3, 30) == (10, 20)
    with pytest.raises(ConfigError):
        shard_layers(3, 3, 30)
