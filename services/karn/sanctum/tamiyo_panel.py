"""One Tamiyo panel per policy line: version, action distribution, head entropies and the latest PPO update."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from services.karn.sanctum import thresholds as T
from services.karn.sanctum.cells import number, signed, sparkline
from services.karn.snapshot import PolicyView

#: Every row label the panel renders; each has a FieldHelp in help/panels/tamiyo.py (plans/karn2-sanctum-v2.md K10).
ROW_LABELS = (
    "decisions", "entropy", "PPO", "Lp", "Lv", "H", "KL", "clip", "EV", "version lag", "load failed", "LSTM", "XFMR",
    "attn",
)  # fmt: skip
#: §4.10: the header badge per architecture.
ARCHITECTURE_BADGES = {"lstm": "LSTM", "slot_transformer": "XFMR"}


def _graded(value: float | None, band: T.Band, digits: int, signed_value: bool = False) -> Text:
    """The number in its band's colour, with the grade's word after a warning or worse (never colour alone)."""
    shown = signed(value, digits) if signed_value else number(value, digits)
    grade = band.grade(value)
    text = Text(shown, style=band.style(value))
    if grade in ("warn", "critical"):
        text.append(f" {T.GRADE_WORDS[grade]}", style=T.GRADE_STYLES[grade])
    return text


def _bar(fraction: float, width: int = 12) -> str:
    filled = max(0, min(width, round(fraction * width)))
    return "█" * filled + "░" * (width - filled)


class TamiyoPanel(Static):
    """Shows one `view`; 'waiting for first update' until its first PPOUpdateCompleted."""

    can_focus = True
    view: reactive[PolicyView | None] = reactive(None)

    def render(self) -> Group | Text:
        v = self.view
        if v is None:
            return Text("no policy")
        title = Text.assemble(("Tamiyo ", "dim"), (v.policy_id, "bold"), f"  v{v.version}", ("  decisions ", "dim"))
        title.append(str(v.decisions))
        if v.architecture is not None:
            title.append(f"  {ARCHITECTURE_BADGES.get(v.architecture, v.architecture)}", style="bold magenta")
        actions = Table(box=None, padding=(0, 1), show_header=False)
        actions.add_column("op", no_wrap=True)
        actions.add_column("bar", no_wrap=True)
        actions.add_column("share", justify="right", no_wrap=True)
        for op, count in v.actions[:6]:
            share = count / v.decisions if v.decisions else 0.0
            actions.add_row(op, Text(_bar(share), style="cyan"), f"{100 * share:.0f}%")
        heads = Text("entropy ", style="dim")
        if v.head_entropies:
            heads.append(" ".join(f"{head} {value:.2f}" for head, value in v.head_entropies))
            heads.append(f"  ({v.entropy_source})", style="dim")
        else:
            heads.append("—")
        parts: list[Text | Table] = [title, actions, heads]
        if v.slot_attention:
            parts.append(
                Text.assemble(("attn ", "dim"), "  ".join(f"{slot} {mass:.2f}" for slot, mass in v.slot_attention))
            )
        if v.updates == 0:
            parts.append(Text("PPO: waiting for first update", style="dim italic"))
        else:
            parts.append(
                Text.assemble(
                    ("PPO ", "dim"),
                    f"{v.updates} updates  ",
                    ("Lp ", "dim"),
                    signed(v.policy_loss, 4),
                    ("  Lv ", "dim"),
                    number(v.value_loss, 4),
                    ("  H ", "dim"),
                    _graded(v.entropy, T.ENTROPY, 3),
                )
            )
            parts.append(
                Text.assemble(
                    ("KL ", "dim"),
                    _graded(v.approx_kl, T.APPROX_KL, 4),
                    " ",
                    (sparkline(v.kl_history, 10), "yellow"),
                    ("  clip ", "dim"),
                    _graded(v.clip_fraction, T.CLIP_FRACTION, 2),
                    ("  EV ", "dim"),
                    _graded(v.explained_variance, T.EXPLAINED_VARIANCE, 2, signed_value=True),
                )
            )
        parts.append(Text.assemble(("version lag ", "dim"), _graded(v.version_lag, T.VERSION_LAG, 2)))
        if v.load_failure:
            parts.append(Text(f"load failed {v.load_failure}", style="bold red"))
        return Group(*parts)
