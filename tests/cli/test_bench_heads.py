"""``quatrain bench --heads``: the heads count reaches the benchmarked models; a bad count fails before measuring."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from quatrain.cli import cli

pytestmark = pytest.mark.usefixtures("one_thread")

QUICK = ("bench", "--preset", "tiny", "--device", "cpu", "--backends", "naive", "--iters", "1", "--warmup", "1")


@pytest.mark.parametrize("heads", [1, 8], ids=["one-head", "eight-heads"])
def test_heads_reach_the_models(registry, tmp_path, heads):
    md = tmp_path / "run.md"
    result = CliRunner().invoke(
        cli, [*QUICK, "--batch-size", "2", "--heads", str(heads), "--json", "--markdown", str(md)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["setup"]["config"]["num_heads"] == heads
    assert f"{heads} heads, batch 2" in md.read_text()


def test_heads_that_do_not_divide_the_hidden_size_fail_before_measuring(registry):
    result = CliRunner().invoke(cli, [*QUICK, "--heads", "3"])
    assert result.exit_code == 2
    assert "--heads" in result.output and "must divide hidden_size" in result.output
    assert "[0/" not in result.output  # nothing was measured
