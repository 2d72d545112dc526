"""`esper kasmina blueprints`: the catalog lists the conv ladder with what each of its levels runs."""

from __future__ import annotations

import json

import pytest

from services.operator.cli import build_parser


def esper(*argv: str) -> int:
    """The command as `esper` runs it, without `main`'s faulthandler (which needs a real stderr)."""
    args = build_parser().parse_args(list(argv))
    return int(args.func(args))


def rung(channels: int) -> int:
    return 9 * channels * channels + 3 * channels


@pytest.mark.parametrize("channels", [16, 32, 64])
def test_the_catalog_lists_the_ladder_with_its_parameters_per_level(
    channels: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert esper("kasmina", "blueprints", "--channels", str(channels)) == 0
    lines = capsys.readouterr().out.splitlines()
    (row,) = [i for i, line in enumerate(lines) if " conv_ladder " in line]
    assert f"{4 * rung(channels):,} params" in lines[row] and "identity at birth" in lines[row]
    levels = ", ".join(f"{k}: {k * rung(channels):,}" for k in range(1, 5))
    assert f"active params by level ({levels}); {rung(channels):,} at birth" in lines[row + 1]

    assert esper("kasmina", "blueprints", "--channels", str(channels), "--json") == 0
    catalog = {entry["name"]: entry for entry in json.loads(capsys.readouterr().out)}
    ladder = catalog["conv_ladder"]
    assert ladder["level_param_counts"] == [k * rung(channels) for k in range(5)]
    assert (ladder["param_count"], ladder["active_param_count"]) == (4 * rung(channels), rung(channels))
    assert catalog["conv_heavy"]["level_param_counts"] == []
    assert catalog["conv_heavy"]["active_param_count"] == catalog["conv_heavy"]["param_count"]
