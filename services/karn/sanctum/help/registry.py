"""Every panel's help by id, and which widget class each belongs to (plans/karn2-sanctum-v2.md §6)."""

from __future__ import annotations

from services.karn.sanctum.help.content import PanelHelp
from services.karn.sanctum.help.panels import (
    anomaly_strip,
    decisions,
    env_detail,
    env_overview,
    event_log,
    run_header,
    scoreboard,
    tamiyo,
)

PANELS: dict[str, PanelHelp] = {
    panel.panel_id: panel
    for panel in (
        run_header.HELP,
        anomaly_strip.HELP,
        env_overview.HELP,
        scoreboard.HELP,
        tamiyo.HELP,
        decisions.HELP,
        event_log.HELP,
        env_detail.HELP,
    )
}

#: Widget (or screen) class name → panel id. Names, not classes, so help never imports a widget.
WIDGETS: dict[str, str] = {
    "RunHeader": "run_header",
    "AnomalyStrip": "anomaly_strip",
    "EnvOverview": "env_overview",
    "ScoreboardPanel": "scoreboard",
    "TamiyoPanel": "tamiyo",
    "DecisionsPanel": "decisions",
    "EventLog": "event_log",
    "EnvDetailScreen": "env_detail",
}


def panel_ids() -> list[str]:
    return list(PANELS)


def panel_title(class_name: str) -> str:
    """The title a widget's border shows: its help's title, so the two always name the panel alike."""
    panel = help_for_class(class_name)
    return panel.title if panel else ""


def help_for_class(class_name: str) -> PanelHelp | None:
    panel_id = WIDGETS.get(class_name)
    return PANELS.get(panel_id) if panel_id else None
