"""The event log: lifecycle, episode, policy and committed-epoch lines, newest at the bottom."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import RichLog

from services.karn.snapshot import LogLine

SEVERITY_STYLES = {"debug": "dim", "info": "", "warning": "yellow", "error": "bold red", "critical": "bold red"}


class EventLog(RichLog):
    """Appends the lines of `log_lines` it has not written yet; a new `filter_text` rewrites what matches."""

    log_lines: reactive[tuple[LogLine, ...]] = reactive(tuple)
    filter_text: reactive[str] = reactive("")

    def __init__(self, **kwargs: object) -> None:
        super().__init__(max_lines=200, wrap=True, markup=False, **kwargs)  # type: ignore[arg-type]
        self._written = 0

    def _visible(self, line: LogLine) -> bool:
        needle = self.filter_text.strip().lower()
        if not needle:
            return True
        if needle.isdigit():
            return line.env_id == int(needle)
        return needle in line.text.lower()

    def watch_log_lines(self, lines: tuple[LogLine, ...]) -> None:
        for line in lines:
            if line.seq > self._written and self._visible(line):
                self.write(Text(line.text, style=SEVERITY_STYLES.get(line.severity, "")))
        if lines:
            self._written = max(self._written, lines[-1].seq)

    def watch_filter_text(self) -> None:
        self.clear()
        self._written = 0
        self.watch_log_lines(self.log_lines)
