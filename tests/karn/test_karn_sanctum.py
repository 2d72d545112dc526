"""Sanctum driven by Textual's pilot: attached to a real bus carrying a run, and replaying one from the store."""

from __future__ import annotations

import html
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import msgspec
import pytest
from karn_fixtures import accuracy, publish, put_run, script
from textual.pilot import Pilot
from textual.widget import Widget

import leyline_schemas as L
from services.karn.feeds import LiveFeed, StoreFeed
from services.karn.sanctum.anomaly_strip import AnomalyStrip
from services.karn.sanctum.app import SanctumApp
from services.karn.sanctum.env_detail_screen import EnvDetailScreen
from services.karn.sanctum.env_overview import EnvOverview
from services.karn.sanctum.event_log import EventLog
from services.karn.sanctum.help.modal import PanelHelpModal
from services.karn.sanctum.run_header import RunHeader
from services.karn.sanctum.run_info_screen import RunInfoScreen
from services.karn.sanctum.tamiyo_panel import TamiyoPanel
from services.karn.store import RunStore
from services.runtime import jetstream
from services.runtime.bus import connect
from services.runtime.settings import RuntimeSettings

pytestmark = pytest.mark.integration

SNAPSHOTS = Path(__file__).parent / "snapshots"
SIZE = (200, 50)


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[object]:
    nc = await connect(RuntimeSettings.from_env({"service": "test-karn", "nats_url": nats_url}))
    context = nc.jetstream()
    await jetstream.bootstrap(context)
    yield context
    await nc.close()


W = TypeVar("W", bound=Widget)


async def until(pilot: Pilot[None], condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the screen never showed what was published"
        await pilot.pause(0.05)


async def mounted(pilot: Pilot[None], app: SanctumApp, widget: type[W], timeout: float = 15.0) -> W:
    """The app's one `widget`, once its screen is up (on a loaded machine that takes a few frames)."""
    await until(pilot, lambda: bool(app.query(widget)), timeout)
    return app.query_one(widget)


def screen_text(svg: str) -> str:
    """The visible text of a Textual SVG screenshot, one string (spaces restored)."""
    return html.unescape(re.sub(r"<[^>]+>", "", svg.replace("&#160;", " ")))


def row_text(app: SanctumApp, env_id: int) -> str:
    return " ".join(str(cell) for cell in app.query_one(EnvOverview).get_row(str(env_id)))


async def test_attached_to_a_live_run_shows_the_runs_numbers(nats_url: str, js: object, tmp_path: Path) -> None:
    run_id = f"run-live-{uuid.uuid4().hex[:6]}"
    run = script(run_id, learn=True, policy_id=f"ppo-{run_id}", start=time.time() - 5.5)
    await put_run(js, run)
    half = len(run.items) // 2
    await publish(js, run.items[:half])
    app = SanctumApp(LiveFeed(nats_url, run_id), refresh_seconds=0.1)
    async with app.run_test(size=SIZE) as pilot:
        table = await mounted(pilot, app, EnvOverview)
        await until(pilot, lambda: table.row_count == 4)
        await publish(js, run.items[half:])  # the rest of the run arrives while Sanctum is drawing
        header = await mounted(pilot, app, RunHeader)
        await until(pilot, lambda: header.view is not None and header.view.episodes_done == 4)
        await until(pilot, lambda: header.view is not None and header.view.state == "completed")
        await until(pilot, lambda: "94.36%" in row_text(app, 0))
        assert header.view is not None and header.view.freshness in ("LIVE", "SLOW")
        assert header.view.state == "completed" and header.view.mode == "reward simplified"
        assert f"{accuracy(3, 3, 12):.2f}%" in row_text(app, 3) and "FOSS:conv_light" in row_text(app, 0)
        assert "PRUNE:attention" in row_text(app, 1)
        (panel,) = app.query(TamiyoPanel)
        assert panel.view is not None and panel.view.updates == 1 and panel.view.version == 1

        await pilot.press("2")
        assert table.selected_env == 1
        await pilot.press("j")
        assert table.selected_env == 2
        await pilot.press("k", "d")
        assert isinstance(app.screen, EnvDetailScreen) and app.screen.env_id == 1
        await until(pilot, lambda: app.screen.detail is not None)  # type: ignore[attr-defined]
        detail_text = screen_text(app.export_screenshot())
        assert "PRUNED" in detail_text and "attention" in detail_text and "Counterfactual" in detail_text
        await pilot.press("escape")
        await pilot.press("1", "enter")
        await until(pilot, lambda: isinstance(app.screen, EnvDetailScreen))
        await pilot.pause(0.2)
        detail_text = screen_text(app.export_screenshot())
        assert "Interactions" in detail_text and "+0.12" in detail_text and "conv_light" in detail_text
        await pilot.press("escape", "question_mark")  # v2: `?` on the env table is that panel's help
        assert isinstance(app.screen, PanelHelpModal) and app.screen.panel is not None
        assert app.screen.panel.panel_id == "env_overview"
        await pilot.press("escape", "i")  # RunInfo: every RunSpec field, read from the bus
        assert isinstance(app.screen, RunInfoScreen) and app.screen.info is not None
        assert app.screen.info.source == "RunSpec" and app.screen.info.run_id == run_id
        assert [name for name, _ in app.screen.info.fields] == [f.name for f in msgspec.structs.fields(L.RunSpec)]
        assert dict(app.screen.info.fields)["run_id"] == f'"{run_id}"'
        await pilot.press("escape", "slash")
        await pilot.press(*"FOSS")
        await until(pilot, lambda: table.row_count == 1)
        assert table.selected_env == 0
        await pilot.press("escape")
        await until(pilot, lambda: table.row_count == 4)
        await pilot.press("tab")
        assert app.focused is not None and app.focused is not table

        app.save_screenshot("sanctum_live.svg", str(tmp_path))
        text = screen_text((tmp_path / "sanctum_live.svg").read_text())
        assert run_id in text and "episodes 4/4" in text and "94.86%" in text and "Pareto hypervolume" in text
        assert len(app.frame_times) > 10


async def test_unknown_run_is_said_on_screen(nats_url: str, js: object) -> None:
    app = SanctumApp(LiveFeed(nats_url, "no-such-run", poll_seconds=0.2), refresh_seconds=0.1)
    async with app.run_test(size=SIZE) as pilot:
        strip = await mounted(pilot, app, AnomalyStrip)
        await until(pilot, lambda: "unknown run 'no-such-run'" in strip.problem)
        assert nats_url in strip.problem and strip.has_class("-problem")
        assert "unknown run 'no-such-run'" in screen_text(app.export_screenshot())


async def test_sixteen_envs_arriving_while_drawing_lose_nothing(nats_url: str, js: object) -> None:
    run_id = f"run-16-{uuid.uuid4().hex[:6]}"
    run = script(run_id, n_envs=16, episodes=16, episode_length=6, start=time.time() - 10)
    await put_run(js, run)
    app = SanctumApp(LiveFeed(nats_url, run_id), refresh_seconds=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.feed.aggregator is not None)
        for start in range(0, len(run.items), 40):
            await publish(js, run.items[start : start + 40])
            await pilot.pause(0.02)
        table = await mounted(pilot, app, EnvOverview)
        await until(pilot, lambda: app.feed.received >= len(run.items), timeout=30)  # type: ignore[attr-defined]
        await until(pilot, lambda: table.row_count == 16)
        header = await mounted(pilot, app, RunHeader)
        await until(pilot, lambda: header.view is not None and header.view.episodes_done == 16)
        assert all(f"{accuracy(e, e, 6):.2f}%" in row_text(app, e) for e in range(16))
    assert len(app.frame_times) > 5


async def test_replay_from_the_store_and_the_main_screen_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "karn.sqlite"
    with RunStore.open(path) as store:
        store.ingest(script("run-snapshot", learn=True, policy_id="ppo-snapshot").items)
    app = SanctumApp(StoreFeed(path, None), refresh_seconds=0.1)
    async with app.run_test(size=SIZE) as pilot:
        table = await mounted(pilot, app, EnvOverview)
        await until(pilot, lambda: table.row_count == 4)
        # The feed replays in its own thread: four rows can show before the last lines are in. Wait for the replay
        # to end (the feed says so), then for the log to hold its last line, before taking the picture.
        await until(pilot, lambda: app.feed.status.startswith("replayed"))
        log = app.query_one(EventLog)
        await until(pilot, lambda: bool(log.log_lines) and log.log_lines[-1].text.endswith("RUN completed"))
        await pilot.pause(0.3)
        SNAPSHOTS.mkdir(exist_ok=True)
        app.save_screenshot("sanctum_main.svg", str(SNAPSHOTS))
    text = screen_text((SNAPSHOTS / "sanctum_main.svg").read_text())
    for expected in (
        "REPLAY",
        "run-snapshot",
        "episodes 4/4",
        "ALL CLEAR",
        "FOSS:conv_light",
        "BLEND:norm",
        "PRUNE:attention",
        f"{accuracy(2, 2, 12):.2f}%",
        "Best runs",
        "Worst regressions",
        "Tamiyo ppo-snapshot",
        "KL 0.0040",
        "EPISODE done: acc 94.86%",
        "RUN completed",
    ):
        assert expected in text, expected


async def test_a_store_without_the_run_says_so(tmp_path: Path) -> None:
    path = tmp_path / "karn.sqlite"
    with RunStore.open(path) as store:
        store.ingest(script("run-present", n_envs=1, episodes=1, episode_length=2).items)
    app = SanctumApp(StoreFeed(path, "run-absent"), refresh_seconds=0.1)
    async with app.run_test(size=SIZE) as pilot:
        strip = await mounted(pilot, app, AnomalyStrip)
        await until(pilot, lambda: bool(strip.problem))
        assert "unknown run 'run-absent'" in strip.problem and "run-present" in strip.problem


def test_sanctum_widgets_only_read_snapshots() -> None:
    """The bus adapter is the feed: no widget module imports NATS or the aggregator's inputs."""
    for module in Path(__file__).parents[2].joinpath("services/karn/sanctum").rglob("*.py"):
        source = module.read_text()
        assert "nats" not in source and "TelemetryEvent" not in source, module.name
        assert "import torch" not in source, module.name


@pytest.mark.parametrize("size", [(120, 40), (200, 60)])
async def test_every_panel_fits_and_is_titled_at_both_screen_sizes(tmp_path: Path, size: tuple[int, int]) -> None:
    """K15: at 120×40 and 200×60 every panel lies inside the terminal with a nonzero height, and the screenshot shows
    each panel's border title (the same words as its help title)."""
    from services.karn.sanctum.decisions_panel import DecisionsPanel
    from services.karn.sanctum.event_log import EventLog
    from services.karn.sanctum.help.registry import panel_title
    from services.karn.sanctum.scoreboard_panel import ScoreboardPanel

    path = tmp_path / "karn.sqlite"
    with RunStore.open(path) as store:
        store.ingest(script("run-sizes", learn=True, policy_id="ppo-sizes").items)
    app = SanctumApp(StoreFeed(path, None), refresh_seconds=0.1)
    width, height = size
    async with app.run_test(size=size) as pilot:
        table = await mounted(pilot, app, EnvOverview)
        await until(pilot, lambda: table.row_count == 4 and bool(app.query(TamiyoPanel)))
        await pilot.pause(0.3)
        panels = [RunHeader, AnomalyStrip, EnvOverview, ScoreboardPanel, TamiyoPanel, DecisionsPanel, EventLog]
        for kind in panels:
            for widget in app.query(kind):
                region = widget.region
                assert region.width > 0 and region.height > 0, (kind.__name__, size, region)
                assert region.right <= width and region.bottom <= height, (kind.__name__, size, region)
        app.save_screenshot(f"sanctum_{width}x{height}.svg", str(tmp_path))
    text = screen_text((tmp_path / f"sanctum_{width}x{height}.svg").read_text())
    for kind in (EnvOverview, ScoreboardPanel, DecisionsPanel, EventLog, TamiyoPanel):
        title = panel_title(kind.__name__)
        assert title and title in text, (kind.__name__, size)
