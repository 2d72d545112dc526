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
    text = Text()
    text.append(f"{card.op}", style="bold")
    if card.slot:
        text.append(f"@{card.slot}", style="bold")
    text.append(f"  env {card.env_id} · ep {card.episode} · e{card.epoch} · acc ", style="dim")
    text.append(percent(card.accuracy))
    text.append("\n  conf ", style="dim")
    text.append(number(card.confidence, 2))
    text.append("  H ", style="dim")
    text.append(number(card.entropy, 2))
    text.append("  V ", style="dim")
    text.append(signed(card.value, 2))
    text.append("  reward ", style="dim")
    text.append("—", style="dim")  # Karn has no per-step reward: Simic scores whole episodes
    if card.blueprint:
        text.append(f"\n  {card.blueprint} {card.tempo} {card.style}", style="cyan")
    if card.forced:
        text.append("\n  forced ", style="dim")
        text.append(", ".join(card.forced), style="yellow")
    text.append(f"\n  {card.policy_id} v{card.policy_version}", style="dim")
    return text


class DecisionsPanel(Static):
    """Shows `cards`, newest first; 'no decision yet' until the first decided step."""

    can_focus = True
    cards: reactive[tuple[DecisionCard, ...]] = reactive(tuple)

    def render(self) -> Group | Text:
        if not self.cards:
            return Text("Decisions\nno decision yet", style="dim")
        parts: list[Text] = [Text("Decisions", style="bold")]
        for card in self.cards:
            parts.append(render_card(card))
        return Group(*parts)
