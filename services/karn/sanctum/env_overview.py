"""The env overview: one row per env with accuracy, reward, sparklines, one column per slot, action and status."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import DataTable

from services.karn.sanctum.cells import percent, signed, slot_text, sparkline, status_text
from services.karn.snapshot import EnvRow

LEADING = (("env", "env"), ("ep", "ep"), ("epoch", "epoch"), ("acc", "acc"), ("best", "best"), ("acc~", "acc trend"))
REWARD = (("r_last", "R last"), ("r_mean", "R mean"), ("r~", "R trend"), ("status", "status"))
TRAILING = (("action", "last action"),)


def matches(row: EnvRow, text: str) -> bool:
    """The `/` filter: an env id, or a word found in the status, action, policy or a slot's stage:blueprint."""
    needle = text.strip().lower()
    if not needle:
        return True
    if needle.isdigit():
        return row.env_id == int(needle)
    haystack = " ".join([row.status, row.last_action, row.policy_id, row.arm, *(c.label for c in row.slots)])
    return needle in haystack.lower()


class EnvOverview(DataTable[Text | str]):
    """A DataTable kept in sync with `env_rows`: only changed cells are rewritten each frame."""

    env_rows: reactive[tuple[EnvRow, ...]] = reactive(tuple)
    slot_ids: reactive[tuple[str, ...]] = reactive(tuple)
    filter_text: reactive[str] = reactive("")

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)  # type: ignore[arg-type]
        self._shown_cells: dict[int, tuple[Text | str, ...]] = {}
        self._column_keys: tuple[str, ...] = ()

    @property
    def selected_env(self) -> int | None:
        order = list(self._shown_cells)
        if not order or not 0 <= self.cursor_row < len(order):
            return None
        return order[self.cursor_row]

    def select_env(self, env_id: int) -> bool:
        order = list(self._shown_cells)
        if env_id not in order:
            return False
        self.move_cursor(row=order.index(env_id))
        return True

    def watch_env_rows(self) -> None:
        self._sync()

    def watch_slot_ids(self) -> None:
        self._sync()

    def watch_filter_text(self) -> None:
        self._sync()

    def _cells(self, row: EnvRow) -> tuple[Text | str, ...]:
        progress = f"{row.epoch}/{row.max_epochs}" if row.max_epochs else str(row.epoch)
        return (
            Text(str(row.env_id), style="bold"),
            str(row.episode) if row.episode >= 0 else "—",
            progress,
            Text(percent(row.accuracy), style="bold" if row.accuracy == row.best_accuracy else ""),
            percent(row.best_accuracy),
            Text(sparkline(row.accuracy_history, 10), style="cyan"),
            signed(row.last_return),
            signed(row.mean_return),
            Text(sparkline(row.return_history, 6), style="magenta"),
            status_text(row.status),
            *(slot_text(cell) for cell in row.slots),
            row.last_action,
        )

    def _sync(self) -> None:
        columns = tuple(key for key, _ in LEADING + REWARD) + self.slot_ids + tuple(key for key, _ in TRAILING)
        visible = {row.env_id: self._cells(row) for row in self.env_rows if matches(row, self.filter_text)}
        if columns != self._column_keys:
            self.clear(columns=True)
            for key, label in LEADING + REWARD:
                self.add_column(label, key=key)
            for slot_id in self.slot_ids:
                self.add_column(slot_id, key=slot_id)
            for key, label in TRAILING:
                self.add_column(label, key=key)
            self._column_keys = columns
            self._shown_cells = {}
        if list(visible) != list(self._shown_cells):
            selected = self.selected_env
            self.clear()
            for env_id, cells in visible.items():
                self.add_row(*cells, key=str(env_id))
            self._shown_cells = visible
            if selected is not None:
                self.select_env(selected)
            return
        for env_id, cells in visible.items():
            for key, new, old in zip(columns, cells, self._shown_cells[env_id], strict=True):
                if new != old:
                    self.update_cell(str(env_id), key, new, update_width=True)
        self._shown_cells = visible
