"""Sanctum's help system and thresholds (plans/karn2-sanctum-v2.md §6, checks K8–K10 and K12's key table).

Pure checks of the content and the bands, then Textual's pilot on a replayed store for the routing: `?` opens the
focused panel's help, falls back to the key table, F1 lists every panel and Enter opens one.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from karn_fixtures import feed, script
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import Input, OptionList

import leyline_schemas as L
from services.karn.feeds import StoreFeed
from services.karn.sanctum import thresholds as T
from services.karn.sanctum.anomaly_strip import LABELS as ANOMALY_LABELS
from services.karn.sanctum.app import SanctumApp
from services.karn.sanctum.env_overview import LEADING, REWARD, TRAILING, EnvOverview
from services.karn.sanctum.help.index import HelpIndexScreen
from services.karn.sanctum.help.modal import NO_HELP, PanelHelpModal, help_title, plain_help
from services.karn.sanctum.help.registry import PANELS, WIDGETS, help_for_class
from services.karn.sanctum.help_screen import HelpScreen, key_rows
from services.karn.sanctum.run_info_screen import RunInfoScreen
from services.karn.sanctum.tamiyo_panel import ROW_LABELS, TamiyoPanel
from services.karn.snapshot import LIVE_WITHIN, SLOW_WITHIN, PolicyView

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _generated_rules() -> dict[str, set[float]]:
    """Every colour-rule string the code generates, with the numbers it may contain."""
    rules = {band.color_rules(): set(band.numbers()) for band in T.BANDS.values()}
    rules[PANELS["run_header"].fields[0].color_rules] = {LIVE_WITHIN, SLOW_WITHIN}
    return rules


def test_every_panel_has_enough_help_and_its_modal_shows_its_title() -> None:  # K9
    assert set(WIDGETS.values()) == set(PANELS)
    for panel in PANELS.values():
        assert len(panel.overview) >= 50, panel.panel_id
        assert len(panel.fields) >= 3 and len(panel.diagnostics) >= 2, panel.panel_id
        assert len({f.name for f in panel.fields}) == len(panel.fields), f"{panel.panel_id}: a field named twice"
        text = plain_help(panel)
        assert help_title(panel) in text and panel.title.upper() in text
        for heading in ("WHAT THIS SHOWS", "FIELD REFERENCE", "WHAT TO LOOK FOR"):
            assert heading in text, (panel.panel_id, heading)
    assert plain_help(None).strip() == NO_HELP


def test_every_colour_rule_is_generated_from_the_thresholds_and_its_numbers_are_theirs() -> None:  # K9
    generated = _generated_rules()
    ruled = [(p.panel_id, f) for p in PANELS.values() for f in p.fields if f.color_rules]
    assert len(ruled) >= 6
    for panel_id, field in ruled:
        assert field.color_rules in generated, f"{panel_id}.{field.name}: a colour rule typed by hand"
        numbers = {float(n) for n in NUMBER.findall(field.color_rules)}
        assert numbers == generated[field.color_rules], (panel_id, field.name)
    assert PANELS["tamiyo"].field("KL").color_rules == "green ≤ 0.015, yellow 0.015–0.03, red > 0.03"  # type: ignore[union-attr]
    assert PANELS["tamiyo"].field("EV").color_rules == "green ≥ 0.3, yellow 0–0.3, red ≤ 0"  # type: ignore[union-attr]


def test_every_label_the_panels_render_has_field_help() -> None:  # K10
    overview = PANELS["env_overview"]
    for _, label in LEADING + REWARD + TRAILING:
        assert overview.field(label) is not None, label
    assert overview.field("slots") is not None
    for label in ROW_LABELS:
        assert PANELS["tamiyo"].field(label) is not None, label
    for _, label in ANOMALY_LABELS:
        assert PANELS["anomaly_strip"].field(label) is not None, label


def test_the_tamiyo_panel_renders_every_documented_label_and_grades_with_words() -> None:  # K10, §2
    view = PolicyView(
        policy_id="ppo-x", version=3, decisions=10, actions=(("WAIT", 8), ("GERMINATE", 2)),
        head_entropies=(("op", 0.5),), entropy_source="update", updates=2, policy_loss=-0.01, value_loss=0.4,
        entropy=0.05, approx_kl=0.02, clip_fraction=0.1, explained_variance=-0.2, version_lag=0.0,
        load_failure="sha mismatch", architecture="lstm",
    )  # fmt: skip
    text = _rendered(view)
    for label in ROW_LABELS:
        if label not in ("XFMR", "attn"):  # the slot transformer's badge and row (K14, below)
            assert label in text, label
    assert "0.050 CRIT" in text  # entropy below the critical floor, said in a word
    assert "0.0200 warn" in text  # KL between warn and critical
    assert "-0.20 CRIT" in text  # EV below zero


def _rendered(view: PolicyView, width: int = 120) -> str:
    panel = TamiyoPanel()
    panel.view = view
    console = Console(width=width, record=True)
    console.print(panel.render())
    return console.export_text()


def test_the_header_badge_and_attention_row_follow_the_architecture() -> None:  # K14
    base = {"policy_id": "p", "version": 2, "decisions": 4, "actions": (("WAIT", 4),), "head_entropies": (),
            "entropy_source": "", "updates": 1}  # fmt: skip
    xfmr = _rendered(
        PolicyView(**base, architecture="slot_transformer", slot_attention=(("r0c0", 0.7), ("r0c1", 0.3)))  # type: ignore[arg-type]
    )
    assert "XFMR" in xfmr and "attn r0c0 0.70  r0c1 0.30" in xfmr and "LSTM" not in xfmr
    lstm = _rendered(PolicyView(**base, architecture="lstm"))  # type: ignore[arg-type]
    assert "LSTM" in lstm and "attn" not in lstm and "XFMR" not in lstm
    fixed = _rendered(PolicyView(**{**base, "updates": 0}))  # type: ignore[arg-type]
    assert "LSTM" not in fixed and "XFMR" not in fixed, "no update, no architecture claimed"
    # The update's own field reaches the view through the aggregator.
    from services.karn.aggregator import SanctumAggregator

    run = script("run-arch", learn=True, policy_id="ppo-arch")
    aggregator = SanctumAggregator("run-arch")
    items = []
    for item in run.items:
        if isinstance(item, L.TelemetryEvent) and isinstance(item.payload, L.PPOUpdateCompleted):
            payload = msgspec.structs.replace(
                item.payload, architecture="slot_transformer", slot_attention={"r0c1": 1.0}
            )
            item = msgspec.structs.replace(item, payload=payload)
        items.append(item)
    feed(aggregator, items)
    (view,) = aggregator.snapshot(0.0).policies
    assert view.architecture == "slot_transformer" and view.slot_attention == (("r0c1", 1.0),)


def test_with_no_ppo_update_the_panel_says_so_and_shows_no_ppo_number() -> None:  # K11
    view = PolicyView(
        policy_id="heuristic", version=0, decisions=3, actions=(("WAIT", 3),), head_entropies=(), entropy_source="",
        updates=0,
    )  # fmt: skip
    panel = TamiyoPanel()
    panel.view = view
    console = Console(width=120, record=True)
    console.print(panel.render())
    text = console.export_text()
    assert "waiting for first update" in text
    for label in ("Lp", "Lv", "KL", "clip", "EV"):
        assert f"{label} " not in text, label


@pytest.mark.parametrize(
    ("band", "value", "grade"),
    [
        (T.EXPLAINED_VARIANCE, 0.3, "ok"), (T.EXPLAINED_VARIANCE, 0.29, "warn"),
        (T.EXPLAINED_VARIANCE, 0.0, "critical"),
        (T.ENTROPY, 0.3, "ok"), (T.ENTROPY, 0.1, "warn"), (T.ENTROPY, 0.099, "critical"),
        (T.APPROX_KL, 0.015, "ok"), (T.APPROX_KL, 0.016, "warn"), (T.APPROX_KL, 0.03, "warn"),
        (T.APPROX_KL, 0.031, "critical"), (T.CLIP_FRACTION, 0.25, "ok"), (T.CLIP_FRACTION, 0.3, "warn"),
        (T.CLIP_FRACTION, 0.31, "critical"), (T.ENTROPY, None, None), (T.APPROX_KL, float("nan"), None),
    ],
)  # fmt: skip
def test_bands_grade_the_boundaries_as_the_plan_resolves_them(band: T.Band, value: float, grade: str | None) -> None:
    assert band.grade(value) == grade


RANK = {"ok": 0, "warn": 1, "critical": 2}


@given(st.sampled_from(list(T.BANDS.values())), st.floats(-10, 10), st.floats(-10, 10))
def test_a_worse_value_never_gets_a_better_grade(band: T.Band, a: float, b: float) -> None:
    better, worse = (max(a, b), min(a, b)) if band.higher_is_better else (min(a, b), max(a, b))
    assert RANK[band.grade(worse)] >= RANK[band.grade(better)]  # type: ignore[index]


def test_a_band_with_its_boundaries_swapped_is_refused() -> None:
    with pytest.raises(ValueError, match="wrong side"):
        T.Band("bad", warn=0.1, critical=0.3, higher_is_better=True)


def test_the_key_table_is_the_apps_bindings() -> None:  # K12
    bindings = [b for b in SanctumApp.BINDINGS if not isinstance(b, tuple)]
    rows = key_rows(bindings)
    shown = " ".join(key for key, _ in rows)
    for binding in bindings:
        for key in binding.key.split(","):
            display = {"question_mark": "?", "slash": "/", "escape": "Esc", "f1": "F1"}.get(key, key)
            assert display in shown, key
    assert all(description for _, description in rows)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    from services.karn.store import RunStore

    path = tmp_path / "karn.sqlite"
    with RunStore.open(path) as opened:
        opened.ingest(script("run-help", learn=True, policy_id="ppo-help").items)
    return path


async def _replayed(pilot: Pilot[None], app: SanctumApp) -> None:
    """Wait until the store feed (its own thread) has replayed the run and a frame has shown it."""
    deadline = time.monotonic() + 30
    while not (app.feed.status.startswith("replayed") and app.query(TamiyoPanel)):
        assert time.monotonic() < deadline, f"the replay never finished: {app.feed.status}"
        await pilot.pause(0.05)


@pytest.mark.integration
async def test_question_mark_opens_the_focused_panels_help_or_the_key_table(store: Path) -> None:  # K8
    app = SanctumApp(StoreFeed(store, None), refresh_seconds=0.1)
    async with app.run_test(size=(200, 50)) as pilot:
        await _replayed(pilot, app)
        assert isinstance(app.screen.focused, EnvOverview)
        await pilot.press("question_mark")
        assert isinstance(app.screen, PanelHelpModal) and app.screen.panel is PANELS["env_overview"]
        box = app.screen.query_one("#panel-help-box")
        assert box.border_title == "[?] ENVIRONMENT OVERVIEW HELP"
        await pilot.press("G", "g", "j", "k")  # scrolling keys stay inside the modal
        assert isinstance(app.screen, PanelHelpModal)
        await pilot.press("escape")
        assert not isinstance(app.screen, PanelHelpModal)
        # A Tamiyo panel focused (Tab order): its own help.
        tamiyo = app.query_one(TamiyoPanel)
        tamiyo.focus()
        await pilot.pause(0.05)
        await pilot.press("question_mark")
        assert isinstance(app.screen, PanelHelpModal) and app.screen.panel is PANELS["tamiyo"]
        await pilot.press("q")
        # The filter box has no panel help: the key table, generated from the bindings.
        await pilot.press("slash")
        assert isinstance(app.screen.focused, Input)
        app.action_help()
        await pilot.pause(0.05)
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        # F1 lists every panel; Enter on one opens its help.
        await pilot.press("escape")
        app.query_one(EnvOverview).focus()
        await pilot.press("f1")
        assert isinstance(app.screen, HelpIndexScreen)
        options = app.screen.query_one(OptionList)
        assert [options.get_option_at_index(i).id for i in range(options.option_count)] == list(PANELS)
        await pilot.press("down", "enter")
        assert isinstance(app.screen, PanelHelpModal) and app.screen.panel is list(PANELS.values())[1]


@pytest.mark.integration
async def test_run_info_from_a_store_says_where_its_fields_came_from(store: Path) -> None:  # K12 (replay)
    app = SanctumApp(StoreFeed(store, None), refresh_seconds=0.1)
    async with app.run_test(size=(200, 50)) as pilot:
        await _replayed(pilot, app)  # RunInfo reads what the feed has gathered
        await pilot.press("i")
        assert isinstance(app.screen, RunInfoScreen) and app.screen.info is not None
        info = app.screen.info
        assert info.run_id == "run-help" and info.source.startswith("RunStarted")
        names = [name for name, _ in info.fields]
        assert names == [f.name for f in msgspec.structs.fields(L.RunStarted)]
        assert dict(info.fields)["slot_ids"] == '["r0c0", "r0c1", "r0c2"]'
        await pilot.press("i")
        assert not isinstance(app.screen, RunInfoScreen)


def test_help_lookup_walks_class_names_only() -> None:
    assert help_for_class("EnvOverview") is PANELS["env_overview"]
    assert help_for_class("Input") is None
