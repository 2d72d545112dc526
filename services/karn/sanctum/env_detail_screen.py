"""The env detail screen: seed cards, counterfactual contributions and the interaction matrix of one env."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Static

from services.karn.sanctum.cells import percent, sparkline
from services.karn.sanctum.counterfactual_panel import CounterfactualPanel
from services.karn.sanctum.interaction_matrix import InteractionMatrix
from services.karn.sanctum.seed_card import SeedCard
from services.karn.snapshot import EnvDetail


class EnvDetailScreen(Screen[None]):
    """Follows one env; the app pushes a fresh `detail` on every frame while the screen is shown."""

    BINDINGS = [
        Binding("escape,q,d", "app.pop_screen", "back"),
        Binding("question_mark", "app.help", "help"),
    ]

    detail: reactive[EnvDetail | None] = reactive(None)

    def __init__(self, env_id: int) -> None:
        super().__init__()
        self.env_id = env_id
        self._composed = False

    def compose(self) -> ComposeResult:
        yield Static(id="detail-title")
        with VerticalScroll():
            yield Horizontal(id="seed-cards")
            with Horizontal(id="detail-panels"):
                yield CounterfactualPanel()
                yield InteractionMatrix()
            yield Static(id="recent-actions")
        yield Footer()

    def on_mount(self) -> None:
        self._composed = True
        self.watch_detail(self.detail)

    def watch_detail(self, detail: EnvDetail | None) -> None:
        if not self._composed:
            return
        title = self.query_one("#detail-title", Static)
        if detail is None:
            title.update(Text(f" env {self.env_id}: nothing received yet", style="bold"))
            return
        title.update(
            Text.assemble(
                (f" env {detail.env_id} ", "bold reverse"),
                f"  episode {detail.episode}  epoch {detail.epoch}  accuracy ",
                (percent(detail.accuracy), "bold"),
                "  ",
                (sparkline(detail.accuracy_history, 40), "cyan"),
            )
        )
        cards = self.query_one("#seed-cards", Horizontal)
        existing = list(cards.query(SeedCard))
        if len(existing) != len(detail.seeds):
            cards.remove_children()
            existing = [SeedCard() for _ in detail.seeds]
            cards.mount_all(existing)
        for card, cell in zip(existing, detail.seeds, strict=True):
            card.cell = cell
        self.query_one(CounterfactualPanel).detail = detail
        self.query_one(InteractionMatrix).detail = detail
        actions = Text("recent actions  ", style="dim")
        actions.append("  ".join(detail.recent_actions[-8:]) or "—", style="")
        self.query_one("#recent-actions", Static).update(actions)
