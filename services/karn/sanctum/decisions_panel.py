"""Decision cards (plans/karn2-sanctum-v2.md §4.9): up to three recent decisions, one env at a time."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from services.karn.sanctum.cells import number, percent, signed
from services.karn.snapshot import DecisionCard

#: Every label a card renders; each has a FieldHelp in help/panels/decisions.py.
CARD_LABELS = ("conf", "H", "V", "reward", "forced")


def render_card(card: DecisionCard) -> Text:
    """Three short lines (a card must fit a third of the bottom row): what, how sure, and by whom."""
    text = Text()
    text.append(card.op + (f"@{card.slot}" if card.slot else ""), style="bold")
    text.append(f"  env {card.env_id} ep {card.episode} e{card.epoch}", style="dim")
    text.append("\n  acc ", style="dim")
    text.append(percent(card.accuracy))
    text.append("  conf ", style="dim")
    text.append(number(card.confidence, 2))
    text.append("  H ", style="dim")
    text.append(number(card.entropy, 2))
    if card.blueprint:
        text.append(f"\n  {card.blueprint} {card.tempo} {card.style}", style="cyan")
    if card.forced:
        text.append("\n  forced ", style="dim")
        text.append(", ".join(card.forced), style="yellow")
    text.append("\n  V ", style="dim")
    text.append(signed(card.value, 2))
    # Karn has no per-step reward (Simic scores whole episodes), and says so.
    text.append(f"  reward —  {card.policy_id} v{card.policy_version}", style="dim")
    return text


class DecisionsPanel(Static):
    """Shows `cards`, newest first; 'no decision yet' until the first decided step."""

    can_focus = True
    cards: reactive[tuple[DecisionCard, ...]] = reactive(tuple)

    def render(self) -> Group | Text:
        if not self.cards:
            return Text("no decision yet", style="dim")
        return Group(*(render_card(card) for card in self.cards))
