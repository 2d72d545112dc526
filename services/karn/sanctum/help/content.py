"""The three records help is made of (plans/karn2-sanctum-v2.md §6)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["good", "warning", "critical"]
#: How the modal marks each severity: a character, not a colour.
SEVERITY_MARKS: dict[Severity, str] = {"good": "+", "warning": "!", "critical": "X"}


@dataclass(frozen=True)
class FieldHelp:
    """One label a panel renders: what it means, and (generated, never typed) the colours it takes."""

    name: str
    description: str
    color_rules: str = ""


@dataclass(frozen=True)
class DiagnosticPattern:
    """Something to look for: what it means and what to do about it."""

    severity: Severity
    pattern: str
    meaning: str
    action: str = ""


@dataclass(frozen=True)
class PanelHelp:
    """A panel's help: an overview, its fields, what to look for and its keys."""

    panel_id: str
    title: str
    overview: str
    fields: tuple[FieldHelp, ...]
    diagnostics: tuple[DiagnosticPattern, ...]
    keyboard: dict[str, str] = field(default_factory=dict)

    def field(self, name: str) -> FieldHelp | None:
        return next((f for f in self.fields if f.name == name), None)
