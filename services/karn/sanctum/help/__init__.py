"""Sanctum's contextual help (plans/karn2-sanctum-v2.md §6): one PanelHelp per panel, a `?` modal for the focused
panel, an F1 index of every panel. Colour rules are generated from `services.karn.sanctum.thresholds`."""
