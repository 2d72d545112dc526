"""Sanctum's aggregator: the run's messages in, the numbers on screen out (no bus, no terminal)."""

from __future__ import annotations

import uuid

import pytest
from karn_fixtures import HOST_PARAMS, accuracy, feed, script

import leyline_schemas as L
from services.karn.aggregator import SanctumAggregator
from services.karn.env_state import EnvState


def event(run_id: str, payload: L.EventPayload, ts: float, **where: int) -> L.TelemetryEvent:
    return L.TelemetryEvent(
        event_id=uuid.uuid4().hex, run_id=run_id, source="test", timestamp=ts, payload=payload, **where
    )


def test_a_finished_learning_run_on_screen() -> None:
    run = script("run-agg", learn=True, policy_id="ppo-agg")
    aggregator = SanctumAggregator("run-agg")
    aggregator.apply_spec(run.spec())
    feed(aggregator, run.items)
    snap = aggregator.snapshot(now=run.start + run.clock + 1.0)

    header = snap.header
    assert (header.run_id, header.task, header.mode, header.state) == (
        "run-agg",
        "digits",
        "reward simplified",
        "completed",
    )
    assert (header.episodes_done, header.episodes_total, header.freshness) == (4, 4, "LIVE")
    epoch_times = [
        i.timestamp
        for i in run.items
        if isinstance(i, L.TelemetryEvent) and i.payload.__struct_config__.tag == "epoch_completed"
    ]
    assert header.epochs_per_second == pytest.approx(48 / (max(epoch_times) - run.items[0].timestamp))

    rows = {r.env_id: r for r in snap.envs}
    assert [rows[e].accuracy for e in range(4)] == [accuracy(e, e, 12) for e in range(4)]
    assert rows[3].best_accuracy == pytest.approx(accuracy(3, 3, 8))
    assert [c.label for c in rows[0].slots] == ["empty", "FOSSILIZED:conv_light", "BLENDING:norm"]
    assert rows[1].slots[0].stage == "PRUNED" and rows[1].slots[0].vanishing is False  # pruned: no live gradients
    assert rows[0].last_return == pytest.approx(round(3 * accuracy(0, 0, 12) / 100 - 0.02, 6))
    assert snap.slot_ids == ("r0c0", "r0c1", "r0c2")

    board = snap.scoreboard
    assert [s.env_id for s in board.best] == [2, 1, 0, 3]
    (worst,) = board.worst
    assert worst.env_id == 3 and worst.regression == pytest.approx(accuracy(3, 3, 8) - accuracy(3, 3, 12))
    assert board.hypervolume == pytest.approx(accuracy(2, 2, 12))  # the only frontier point, param ratio 1.0

    (policy,) = snap.policies
    assert (policy.policy_id, policy.version, policy.updates, policy.decisions) == ("ppo-agg", 1, 1, 48)
    assert dict(policy.actions) == {"WAIT": 38, "ADVANCE": 5, "GERMINATE": 3, "PRUNE": 1, "FOSSILIZE": 1}
    assert policy.approx_kl == pytest.approx(0.004) and policy.entropy_source == "PPO v1"

    log = [line.text for line in snap.log]
    assert any("round 0 epoch  12: mean acc" in t and "over 4/4 envs" in t for t in log)
    assert any("FOSSILIZED conv_light in r0c1" in t for t in log)
    assert not any("run-agg" in t for t in log)  # the run is in the header, not on every line

    detail = aggregator.env_detail(0)
    assert detail is not None and detail.from_steps
    assert detail.interactions == (("r0c1", "r0c2", 0.125),)
    assert detail.all_off_accuracy == pytest.approx(accuracy(0, 0, 12) - 1.0)
    assert [c.contribution for c in detail.seeds] == [None, pytest.approx(1.6), pytest.approx(1.6)]


def test_a_heuristic_run_has_no_updates_and_entropy_from_its_decisions() -> None:
    run = script("run-heur", n_envs=2, episodes=2)
    aggregator = SanctumAggregator("run-heur")
    feed(aggregator, run.items)
    (policy,) = aggregator.snapshot(run.start).policies
    assert policy.updates == 0 and policy.policy_loss is None
    assert dict(policy.head_entropies) == {"op": 0.5, "slot": 0.25}
    assert policy.version_lag == 0.0


def test_freshness_follows_the_age_of_the_newest_event() -> None:
    run = script("run-age", n_envs=1, episodes=1, episode_length=2)
    aggregator = SanctumAggregator("run-age")
    assert aggregator.snapshot(0.0).header.freshness == "WAITING"
    feed(aggregator, run.items)
    last = max(i.timestamp for i in run.items if isinstance(i, L.TelemetryEvent))
    assert [aggregator.snapshot(last + age).header.freshness for age in (1.0, 3.0, 6.0)] == ["LIVE", "SLOW", "STALE"]
    assert SanctumAggregator("x", replay=True).snapshot(0.0).header.freshness == "REPLAY"


def test_other_runs_are_ignored_but_this_runs_policy_updates_are_not() -> None:
    run = script("run-mine", n_envs=1, episodes=1, episode_length=2, policy_id="shared-line")
    aggregator = SanctumAggregator("run-mine")
    feed(aggregator, run.items)
    feed(aggregator, script("run-other", n_envs=1, episodes=1, episode_length=2).items)
    aggregator.apply_event(event("_system", L.PolicyUpdated(policy_id="shared-line", version=7), 1.0))
    aggregator.apply_event(event("_system", L.PolicyUpdated(policy_id="unrelated", version=9), 1.0))
    snap = aggregator.snapshot(0.0)
    assert [p.policy_id for p in snap.policies] == ["shared-line"] and snap.policies[0].version == 7
    assert [r.env_id for r in snap.envs] == [0] and snap.header.episodes_done == 1


def test_steps_and_events_in_any_order_give_the_same_row() -> None:
    run = script("run-order", n_envs=1, episodes=1, episode_length=6)
    events = [i for i in run.items if isinstance(i, L.TelemetryEvent)]
    steps = [i for i in run.items if isinstance(i, L.StepRecord)]
    forward, backward = SanctumAggregator("run-order"), SanctumAggregator("run-order")
    feed(forward, events + steps)
    feed(backward, steps[::-1] + events)
    assert forward.snapshot(0.0).envs == backward.snapshot(0.0).envs


def test_rollback_flashes_until_the_next_epoch_and_counts_as_an_anomaly() -> None:
    aggregator = SanctumAggregator("run-rb")
    done = L.EpochCompleted(val_accuracy=50.0, val_loss=1.0, policy_id="heuristic")
    aggregator.apply_event(event("run-rb", done, 1.0, env_id=0, episode=0, epoch=1))
    aggregator.apply_event(event("run-rb", L.GovernorRollback(reason="nan"), 2.0, env_id=0, episode=0, epoch=2))
    aggregator.apply_event(event("run-rb", done, 2.1, env_id=0, episode=0, epoch=2))
    snap = aggregator.snapshot(3.0)
    assert snap.envs[0].status == "rollback" and snap.anomalies.rollbacks == 1 and not snap.anomalies.all_clear
    aggregator.apply_event(event("run-rb", done, 3.0, env_id=0, episode=0, epoch=3))
    assert aggregator.snapshot(3.0).envs[0].status != "rollback"
    aggregator.count_undecodable()
    assert aggregator.snapshot(3.0).anomalies.undecodable == 1


def epochs(env: EnvState, accuracies: list[float]) -> None:
    for i, acc in enumerate(accuracies, start=env.epoch + 1):
        env.observe_epoch(0, i, L.EpochCompleted(val_accuracy=acc, val_loss=1.0, host_params=HOST_PARAMS))


def test_env_status_initializing_healthy_excellent_stalled_degraded() -> None:
    env = EnvState(0)
    epochs(env, [40.0])
    assert env.status == "initializing"
    epochs(env, [60.0])
    assert env.status == "healthy"
    epochs(env, [85.0])
    assert env.status == "excellent"
    epochs(env, [84.9] * 12)  # 10 epochs without improvement, then 3 checks
    assert env.status == "excellent"
    epochs(env, [84.9])
    assert env.status == "stalled"
    degrading = EnvState(1)
    epochs(degrading, [70.0, 71.0, 69.5, 68.0, 69.0, 67.5])
    assert degrading.status == "degraded"
    epochs(degrading, [72.0])
    assert degrading.status == "healthy"
