"""The Sanctum app: lays the panels out and, on a timer, hands each one its slice of the latest snapshot."""

from __future__ import annotations

import time
from collections import deque
from typing import ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Input

from services.karn.feeds import Feed
from services.karn.sanctum.anomaly_strip import AnomalyStrip
from services.karn.sanctum.decisions_panel import DecisionsPanel
from services.karn.sanctum.env_detail_screen import EnvDetailScreen
from services.karn.sanctum.env_overview import EnvOverview
from services.karn.sanctum.event_log import EventLog
from services.karn.sanctum.help.index import HelpIndexScreen
from services.karn.sanctum.help.modal import PanelHelpModal
from services.karn.sanctum.help.registry import help_for_class, panel_title
from services.karn.sanctum.help_screen import HelpScreen
from services.karn.sanctum.run_header import RunHeader
from services.karn.sanctum.run_info_screen import RunInfoScreen
from services.karn.sanctum.scoreboard_panel import ScoreboardPanel
from services.karn.sanctum.tamiyo_panel import TamiyoPanel
from services.karn.snapshot import PolicyView

#: Frames per second (reference/tolaria_karn.md §9.1 polls at 4 Hz).
REFRESH_SECONDS = 0.25


class SanctumApp(App[None]):
    """Renders a Feed: the feed's thread consumes the bus, this app only reads snapshots on its timer."""

    CSS_PATH = "sanctum.tcss"
    TITLE = "Esper · Sanctum"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "quit"),
        Binding("d", "detail", "env detail (Enter on a row too)"),
        Binding("j", "next_env", "next env", show=False),
        Binding("k", "previous_env", "previous env", show=False),
        Binding("g", "first_env", "first env", show=False),
        Binding("G", "last_env", "last env", show=False),
        Binding("slash", "filter", "filter envs and the event log"),
        Binding("escape", "clear_filter", "clear the filter", show=False),
        Binding("r", "refresh_now", "rebuild the frame now", show=False),
        Binding("h", "app.focus_previous", "focus the panel to the left", show=False),
        Binding("l", "app.focus_next", "focus the panel to the right", show=False),
        Binding("question_mark", "help", "help for the focused panel (the key list elsewhere)"),
        Binding("f1", "help_index", "help index"),
        Binding("i", "run_info", "run info: the whole run spec"),
        *(Binding(str(key), f"select_env({(key - 1) % 10})", show=False) for key in range(1, 10)),
        Binding("0", "select_env(9)", show=False),
    ]

    def __init__(self, feed: Feed, refresh_seconds: float = REFRESH_SECONDS) -> None:
        super().__init__()
        self.feed = feed
        self.refresh_seconds = refresh_seconds
        #: Seconds each frame took to build and hand out (for measuring, never for control).
        self.frame_times: deque[float] = deque(maxlen=1000)

    def compose(self) -> ComposeResult:
        yield RunHeader(id="run-header")
        yield AnomalyStrip(id="anomalies")
        yield Input(placeholder="filter: env id, status, stage, blueprint or action — Esc clears", id="filter")
        with Horizontal(id="top"):
            yield EnvOverview(id="envs")
            yield ScoreboardPanel(id="scoreboard")
        with Horizontal(id="bottom"):
            yield Horizontal(id="policies")
            yield DecisionsPanel(id="decisions")
            yield EventLog(id="event-log")
        yield Footer()

    def on_mount(self) -> None:
        # The main screen's widgets, held rather than queried each frame: a query reaches only the active screen
        # (not the main one while a detail or help screen is on top), and none while the app is tearing down.
        self._header = self.query_one(RunHeader)
        self._strip = self.query_one(AnomalyStrip)
        self._table = self.query_one(EnvOverview)
        self._scoreboard = self.query_one(ScoreboardPanel)
        self._policies = self.query_one("#policies", Horizontal)
        self._event_log = self.query_one(EventLog)
        self._decisions = self.query_one(DecisionsPanel)
        for widget in (self._table, self._scoreboard, self._event_log, self._decisions):
            widget.border_title = panel_title(type(widget).__name__)
        self._filter = self.query_one("#filter", Input)
        self.feed.start()
        self._table.focus()
        self.set_interval(self.refresh_seconds, self.refresh_frame)
        self.refresh_frame()

    def on_unmount(self) -> None:
        self.feed.stop()

    def refresh_frame(self) -> None:
        """Take one snapshot and give each widget its part; widgets redraw only what changed."""
        started = time.perf_counter()
        if not self._header.is_attached:  # a frame that fires while the app exits
            return
        header, strip = self._header, self._strip
        header.status = self.feed.status
        strip.problem = self.feed.problem
        snapshot = self.feed.snapshot(time.time())
        if snapshot is not None:
            header.view = snapshot.header
            strip.anomalies = snapshot.anomalies
            self._table.slot_ids = snapshot.slot_ids
            self._table.env_rows = snapshot.envs
            self._scoreboard.board = snapshot.scoreboard
            self._show_policies(snapshot.policies)
            self._event_log.log_lines = snapshot.log
            self._decisions.cards = snapshot.decisions
        if isinstance(self.screen, EnvDetailScreen):
            self.screen.detail = self.feed.env_detail(self.screen.env_id)
        self.frame_times.append(time.perf_counter() - started)

    def _show_policies(self, views: tuple[PolicyView, ...]) -> None:
        row = self._policies
        panels = list(row.query(TamiyoPanel))
        if [p.view.policy_id if p.view else None for p in panels] != [v.policy_id for v in views]:
            row.remove_children()
            panels = [TamiyoPanel() for _ in views]
            row.mount_all(panels)
            for panel, view in zip(panels, views, strict=True):
                panel.border_title = f"{panel_title('TamiyoPanel')} · {view.policy_id}"
        for panel, view in zip(panels, views, strict=True):
            panel.view = view

    # -- actions -----------------------------------------------------------------------------------------------

    def action_detail(self) -> None:
        env_id = self._table.selected_env
        if env_id is not None:
            screen = EnvDetailScreen(env_id)
            self.push_screen(screen)
            screen.detail = self.feed.env_detail(env_id)

    def on_data_table_row_selected(self, _: DataTable.RowSelected) -> None:
        self.action_detail()

    def action_next_env(self) -> None:
        self._table.action_cursor_down()

    def action_previous_env(self) -> None:
        self._table.action_cursor_up()

    def action_select_env(self, env_id: int) -> None:
        table = self._table
        if table.select_env(env_id):
            table.focus()
        else:
            self.notify(f"env {env_id} is not shown", severity="warning", timeout=2)

    def action_filter(self) -> None:
        box = self._filter
        box.add_class("-shown")
        box.focus()

    def action_clear_filter(self) -> None:
        box = self._filter
        box.value = ""
        box.remove_class("-shown")
        self._table.focus()

    def action_first_env(self) -> None:
        self._table.action_scroll_top()

    def action_last_env(self) -> None:
        self._table.action_scroll_bottom()

    def action_refresh_now(self) -> None:
        self.refresh_frame()

    def action_help(self) -> None:
        """The focused panel's help (looking up its ancestors too); the key list where no panel has help."""
        if isinstance(self.screen, HelpScreen | PanelHelpModal | HelpIndexScreen):
            return
        focused = self.screen.focused
        nodes = [focused, *focused.ancestors] if focused is not None else [self.screen]
        for node in nodes:
            panel = help_for_class(type(node).__name__)
            if panel is not None:
                self.push_screen(PanelHelpModal(panel))
                return
        self.push_screen(HelpScreen([b for b in self.BINDINGS if isinstance(b, Binding)]))

    def action_run_info(self) -> None:
        if not isinstance(self.screen, RunInfoScreen):
            self.push_screen(RunInfoScreen(self.feed.run_info()))

    def action_help_index(self) -> None:
        if not isinstance(self.screen, HelpIndexScreen):
            self.push_screen(HelpIndexScreen())

    def on_input_changed(self, event: Input.Changed) -> None:
        self._table.filter_text = event.value
        self._event_log.filter_text = event.value

    def on_input_submitted(self, _: Input.Submitted) -> None:
        self._table.focus()
