"""What Overwatch reads besides the run API: one env's counterfactual detail, the experiment reports, and the page
itself (served from the package under a same-origin Content-Security-Policy)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from karn_fixtures import script

import leyline_schemas as L
from services.karn.api import create_app
from services.karn.env_detail import waterfall
from services.karn.overwatch import STATIC
from services.karn.reports import flops_curves, list_reports
from services.karn.store import RunStore

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reports")
    proof = root / "proof-x"
    proof.mkdir()
    curves = {
        "treatment/0/0": [
            {"epoch": 1, "accuracy": 50.0, "train_flops": 1e9},
            {"epoch": 2, "accuracy": 60.0, "train_flops": 2e9},
        ],
        "treatment/0/1": [
            {"epoch": 1, "accuracy": 70.0, "train_flops": 3e9},
            {"epoch": 2, "accuracy": None, "train_flops": 1e9},
        ],
        "static-initial/0/0": [{"epoch": 1, "accuracy": 40.0, "train_flops": 1e9}],
    }
    verdict = {
        "verdict": "GROWTH_EARNS",
        "settings": {"task": "mnist1d"},
        "cohorts": [{"cohort": "treatment", "pairs": 2, "final_accuracy": {"mean": 60.0, "low": 55.0, "high": 65.0}}],
        "primary": {
            "P1": {
                "comparison": "treatment − static-initial",
                "estimate": 4.0,
                "low": 1.0,
                "high": float("nan"),
                "status": "pass",
            }
        },
        "curves": curves,
    }
    (proof / "verdict.json").write_text(json.dumps(verdict))
    (proof / "report.md").write_text("# A proof on mnist1d\n\nbody\n")
    exam = root / "exam-x"
    exam.mkdir()
    (exam / "verdict.json").write_text(
        json.dumps(
            {
                "experiment": "reward-efficiency",
                "verdict": {
                    "overall": "INCONCLUSIVE",
                    "criteria": {
                        "simplified_beats_shaped_on_roi": {
                            "metric": "roi", "treatment": "simplified", "control": "shaped", "status": "inconclusive",
                            "difference": {"mean": 0.5, "low": -1.0, "high": 2.0, "n": 8},
                        }
                    },
                    "cohorts": {"shaped": {"episodes": 8, "final_accuracy": {"mean": 43.6, "low": 41.9, "high": 45.2},
                                           "seed_params_added": {"mean": 12.0}}},
                },
            }
        )
    )  # fmt: skip
    (root / "broken").mkdir()
    (root / "broken" / "verdict.json").write_text("{not json")
    (root / "notes").mkdir()  # no verdict: not a report
    return root


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, reports: Path) -> Iterator[TestClient]:
    path = tmp_path_factory.mktemp("web") / "karn.sqlite"
    run = script("run-web", learn=True, policy_id="ppo-web")
    shapley = run.event(
        L.ShapleyComputed(strategy="exact", slot_ids=["r0c1", "r0c2"], shapley={"r0c1": 1.25, "r0c2": 0.5}),
        env_id=0,
        episode=0,
        epoch=12,
    )
    with RunStore.open(path) as store:
        store.ingest([*run.items, shapley])
    with TestClient(create_app(path, reports_dir=reports)) as test_client:
        yield test_client


def test_env_detail_is_the_latest_step_with_its_waterfall_interactions_and_shapley(client: TestClient) -> None:
    detail = client.get("/runs/run-web/envs/0").json()
    assert (detail["episode"], detail["epoch"]) == (0, 12)
    live = {s["slot_id"]: s for s in detail["seeds"]}
    assert live["r0c0"]["stage"] is None and live["r0c0"]["contribution"] is None  # an empty slot: not measured
    assert (live["r0c1"]["stage"], live["r0c1"]["blueprint"]) == ("FOSSILIZED", "conv_light")
    bars = detail["waterfall"]
    assert [b["label"] for b in bars] == ["all seeds off", "r0c1", "r0c2", "interactions + rest", "main config"]
    assert bars[0]["end"] == detail["all_off_accuracy"] and bars[-1]["end"] == detail["accuracy"]
    assert bars[-2]["end"] == pytest.approx(detail["accuracy"])
    assert detail["interactions"] == [{"slot_a": "r0c1", "slot_b": "r0c2", "interaction": 0.125}]
    assert detail["shapley"]["values"] == [
        {"slot_id": "r0c1", "value": 1.25, "std": None},
        {"slot_id": "r0c2", "value": 0.5, "std": None},
    ]
    assert client.get("/runs/run-web/envs/1").json()["shapley"] is None  # no Shapley event for env 1


def test_unknown_envs_episodes_and_reports_are_404s_that_say_what(client: TestClient) -> None:
    for path, words in (
        ("/runs/run-web/envs/9", "no step record of env 9"),
        ("/runs/run-web/envs/0?episode=7", "env 0 episode 7"),
        ("/experiments/nope", "no experiment report 'nope'"),
        ("/experiments/broken", "no experiment report 'broken'"),
        ("/experiments/%2E%2E", "no experiment report '..'"),
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert words in response.json()["detail"], (path, response.json())
    assert client.get("/runs/nope/envs/0").status_code == 404


def test_reports_list_titles_kinds_and_refuse_what_they_cannot_read(client: TestClient, reports: Path) -> None:
    listed = {r["name"]: r for r in client.get("/experiments").json()}
    assert set(listed) == {"proof-x", "exam-x", "broken"}
    exam = client.get("/experiments/exam-x").json()
    assert (exam["kind"], exam["verdict"]) == ("reward-efficiency", "INCONCLUSIVE")
    assert exam["cohorts"] == [
        {"cohort": "shaped", "pairs": 8, "final_accuracy": {"mean": 43.6, "low": 41.9, "high": 45.2},
         "seed_params_added": 12.0}
    ]  # fmt: skip
    (criterion,) = exam["comparisons"]
    assert criterion["comparison"] == "simplified − shaped (roi)" and criterion["status"] == "inconclusive"
    assert (criterion["estimate"], criterion["low"], criterion["high"]) == (0.5, -1.0, 2.0)
    assert exam["flops_curves"] is None
    assert listed["proof-x"] == {
        "name": "proof-x",
        "title": "A proof on mnist1d",
        "kind": "proof",
        "verdict": "GROWTH_EARNS",
    }
    assert listed["broken"]["kind"] == "unreadable" and listed["broken"]["error"]
    summary = client.get("/experiments/proof-x").json()
    assert summary["comparisons"][0]["high"] is None  # NaN left the API as null
    assert summary["cohorts"][0]["final_accuracy"]["mean"] == 60.0
    assert list(summary["flops_curves"]) == ["static-initial", "treatment"]
    assert list_reports(None) == [] and list_reports(reports / "missing") == []


def test_flops_curves_average_the_episodes_that_reached_each_epoch() -> None:
    curves = flops_curves(
        {
            "a/0/0": [
                {"epoch": 2, "accuracy": 60.0, "train_flops": 2e9},
                {"epoch": 1, "accuracy": 50.0, "train_flops": 1e9},
            ],
            "a/0/1": [
                {"epoch": 1, "accuracy": 70.0, "train_flops": 3e9},
                {"epoch": 2, "accuracy": None, "train_flops": 1e9},
            ],
        }
    )
    assert curves["a"] == [
        {"epoch": 1, "accuracy": 60.0, "cumulative_gflops": 2.0, "n": 2},
        {"epoch": 2, "accuracy": 60.0, "cumulative_gflops": 3.0, "n": 1},  # the missing accuracy is skipped, not 0
    ]


@given(
    st.floats(0, 100),
    st.lists(st.tuples(st.sampled_from(["r0c0", "r0c1", "r0c2"]), st.floats(-20, 20)), max_size=3),
    st.floats(0, 100),
)
def test_a_waterfall_always_ends_at_the_main_configuration(all_off: float, seeds: list, accuracy: float) -> None:
    bars = waterfall(all_off, accuracy, seeds)
    steps = bars[1:-1]
    assert bars[0]["end"] == all_off and bars[-1]["end"] == accuracy
    for before, after in zip(bars[:-2], steps, strict=False):  # every step starts where the one before it ended
        assert after["start"] == pytest.approx(before["end"])
        assert after["end"] - after["start"] == pytest.approx(after["delta"])
    assert steps[-1]["end"] == pytest.approx(accuracy)
    assert waterfall(None, accuracy, seeds) == [] and waterfall(float("nan"), accuracy, seeds) == []


def test_the_page_is_served_from_the_package_under_a_same_origin_policy(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "script-src 'self'" in policy
    for asset in ("overwatch.js", "views.js", "charts.js", "overwatch.css"):
        served = client.get(f"/overwatch/{asset}")
        assert served.status_code == 200 and served.text == (STATIC / asset).read_text()
    text = "".join((STATIC / name).read_text() for name in ("index.html", "overwatch.js", "views.js", "charts.js"))
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text, (
        "the page must not load anything from elsewhere"
    )
    assert "innerHTML" not in text, "data reaches the page as text nodes only"
    assert "method:" not in text and "POST" not in text, "the page is read-only"


def test_lifecycles_are_stage_segments_of_each_envs_newest_episode(client: TestClient) -> None:
    lifecycle = client.get("/runs/run-web/lifecycle").json()
    assert set(lifecycle) == {"0", "1", "2", "3"}
    env0 = lifecycle["0"]
    assert (env0["episode"], env0["epoch"]) == (0, 12)
    (conv,) = [s for s in env0["seeds"] if s["blueprint"] == "conv_light"]
    stages = [(seg["stage"], seg["from"], seg["to"]) for seg in conv["segments"]]
    assert [stage for stage, _, _ in stages] == ["GERMINATED", "TRAINING", "BLENDING", "HOLDING", "FOSSILIZED"]
    for (_, _, end), (_, start, _) in itertools.pairwise(stages):
        assert start == end + 1, "segments tile the seed's life with no gap and no overlap"
    assert stages[-1][2] == 12, "a fossil stays in the host to the newest epoch"
    (pruned,) = lifecycle["1"]["seeds"]
    assert pruned["segments"][-1]["stage"] == "PRUNED"
    assert pruned["segments"][-1]["from"] == pruned["segments"][-1]["to"], "a pruned seed's end is one mark"
    assert client.get("/runs/nope/lifecycle").status_code == 404
