"""Every threshold Sanctum colours by, in one place (plans/karn2-sanctum-v2.md §4, resolved per its §9 Choices).

Widgets grade values with these bands and the help text prints their rules from them, so the two cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Grade = Literal["ok", "warn", "critical"]
GRADE_STYLES: dict[Grade, str] = {"ok": "green", "warn": "yellow", "critical": "bold red"}
#: A word for every grade, so no state is told by colour alone.
GRADE_WORDS: dict[Grade, str] = {"ok": "ok", "warn": "warn", "critical": "CRIT"}


def _num(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class Band:
    """Two boundaries of one metric. With `higher_is_better`, below `warn` warns and below `critical` is critical
    (at or below it when `critical_inclusive`); otherwise above `warn` warns and above `critical` is critical."""

    name: str
    warn: float
    critical: float
    higher_is_better: bool
    critical_inclusive: bool = False

    def __post_init__(self) -> None:
        ordered = self.critical <= self.warn if self.higher_is_better else self.warn <= self.critical
        if not ordered:
            raise ValueError(f"band {self.name}: critical {self.critical} is on the wrong side of warn {self.warn}")

    def grade(self, value: float | None) -> Grade | None:
        """The value's grade; None for a value that was not measured (never graded as if it were 0)."""
        if value is None or value != value:  # None or NaN
            return None
        if self.higher_is_better:
            if value < self.critical or (self.critical_inclusive and value == self.critical):
                return "critical"
            return "warn" if value < self.warn else "ok"
        if value > self.critical or (self.critical_inclusive and value == self.critical):
            return "critical"
        return "warn" if value > self.warn else "ok"

    def style(self, value: float | None) -> str:
        grade = self.grade(value)
        return "dim" if grade is None else GRADE_STYLES[grade]

    def color_rules(self) -> str:
        """The band in words, e.g. `green ≥ 0.3, yellow 0.1–0.3, red < 0.1`; the help text shows exactly this."""
        w, c = _num(self.warn), _num(self.critical)
        if self.higher_is_better:
            red = f"red ≤ {c}" if self.critical_inclusive else f"red < {c}"
            return f"green ≥ {w}, yellow {c}–{w}, {red}"
        red = f"red ≥ {c}" if self.critical_inclusive else f"red > {c}"
        return f"green ≤ {w}, yellow {w}–{c}, {red}"

    def numbers(self) -> tuple[float, float]:
        return (self.warn, self.critical)


# §4.4 and §6 (Tamiyo): one source for every panel.
ENTROPY = Band("entropy", warn=0.3, critical=0.1, higher_is_better=True)
APPROX_KL = Band("approx_kl", warn=0.015, critical=0.03, higher_is_better=False)
CLIP_FRACTION = Band("clip_fraction", warn=0.25, critical=0.30, higher_is_better=False)
EXPLAINED_VARIANCE = Band("explained_variance", warn=0.3, critical=0.0, higher_is_better=True, critical_inclusive=True)
#: Version lag of the acting policy behind the learner's newest version (run-ahead mode): ≤ 1 is on time.
VERSION_LAG = Band("version_lag", warn=1.0, critical=3.0, higher_is_better=False)
#: §9: a healthy policy is 60–80 % WAIT; above this share the reward may be punishing action.
WAIT_DOMINANCE = 0.8

#: Every band, by name, for the help text and its check. (The run header's freshness bands live with the snapshot
#: that computes them, `services.karn.snapshot`, and a ladder's thrash bands with the trajectory statistics,
#: `services.observation.level_trajectory`; the help text reads them there.)
BANDS: dict[str, Band] = {
    band.name: band for band in (ENTROPY, APPROX_KL, CLIP_FRACTION, EXPLAINED_VARIANCE, VERSION_LAG)
}
