"""How values look in Sanctum's cells: sparklines, percentages, signed numbers, stages and gradient marks."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.text import Text

from services.karn.snapshot import SlotCell

BARS = "▁▂▃▄▅▆▇█"
STAGE_STYLES = {
    "GERMINATED": "cyan",
    "TRAINING": "yellow",
    "BLENDING": "magenta",
    "HOLDING": "blue",
    "FOSSILIZED": "bold green",
    "PRUNED": "red",
    "EMBARGOED": "dim red",
    "RESETTING": "dim",
}
STATUS_STYLES = {
    "initializing": "dim",
    "healthy": "green",
    "excellent": "bold green",
    "stalled": "yellow",
    "degraded": "bold red",
    "rollback": "bold white on red",
}
STAGE_ABBREVIATIONS = {
    "GERMINATED": "GERM",
    "TRAINING": "TRAIN",
    "BLENDING": "BLEND",
    "HOLDING": "HOLD",
    "FOSSILIZED": "FOSS",
    "PRUNED": "PRUNE",
    "EMBARGOED": "EMBGO",
    "RESETTING": "RESET",
}

#: A ladder's level trend and its thrash dot: green below a 0.3 reversal rate, yellow below 0.6, red above
#: (plans/kasmina2-phase0.md §9 item 5).
TREND_MARKS = {1: "▲", -1: "▼", 0: "─"}
THRASH_DOT_BANDS = ((0.3, "green"), (0.6, "yellow"))
THRASH_DOT_ABOVE = "red"


def sparkline(values: Sequence[float], width: int = 12) -> str:
    """The last `width` values as block characters scaled between their min and max (flat → middle bars)."""
    tail = [v for v in values[-width:] if math.isfinite(v)]
    if not tail:
        return ""
    low, high = min(tail), max(tail)
    if high - low < 1e-12:
        return BARS[3] * len(tail)
    return "".join(BARS[min(len(BARS) - 1, int((v - low) / (high - low) * (len(BARS) - 1) + 0.5))] for v in tail)


def percent(value: float | None, digits: int = 2) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}%"


def signed(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:+.{digits}f}"


def number(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def gradient_mark(cell: SlotCell) -> str:
    """▼ vanishing, ▲ exploding, else a health mark: ✓ > 0.8, ~ > 0.3, ! below (reference §9.8 heat map bands)."""
    if cell.vanishing:
        return "▼"
    if cell.exploding:
        return "▲"
    if cell.gradient_health is None:
        return ""
    if cell.gradient_health > 0.8:
        return "✓"
    return "~" if cell.gradient_health > 0.3 else "!"


def slot_text(cell: SlotCell) -> Text:
    """`STAGE:blueprint` with its gradient mark, coloured by stage; a dim dot for an empty slot."""
    if not cell.occupied:
        return Text("·", style="dim")
    stage = STAGE_ABBREVIATIONS.get(cell.stage, cell.stage)
    text = Text(f"{stage}:{cell.blueprint}", style=STAGE_STYLES.get(cell.stage, ""))
    mark = gradient_mark(cell)
    if mark:
        text.append(f" {mark}", style="bold red" if mark in "▼▲!" else "green")
    return text


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def thrash_style(reversal_rate: float) -> str:
    """The colour of a ladder's thrash dot for its recent reversal rate."""
    return next((style for below, style in THRASH_DOT_BANDS if reversal_rate < below), THRASH_DOT_ABOVE)


def level_text(cell: SlotCell) -> Text:
    """`L k/L ▲ ●`: a microstructured seed's level, its trend and its thrash dot."""
    return Text.assemble(
        f"L {cell.internal_level}/{cell.internal_max_level} ",
        TREND_MARKS[cell.level_trend],
        " ",
        ("●", thrash_style(cell.level_reversal_rate)),
        (f" reversals {cell.level_reversal_rate:.2f}", "dim"),
    )
