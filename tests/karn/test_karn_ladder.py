"""Karn and the conv ladder (plans/kasmina2-phase0.md §9, §12.1, invariant 42): store migration v4, level events
into the seed columns, `internal_ops_legal` from the masks, a rebuild that reproduces the rows, the ladder report,
the compute multiplier, the live log line and the Sanctum seed card.

The run is built from real Leyline messages and fed through Karn's real ingest path. Two envs, one episode each:

- env 0 germinates a ladder in r0c1 at epoch 2, grows, grows, shrinks and grows it at epochs 4–7 (G, G, S, G:
  level 1 → 3), and fossilizes it at level 3 at epoch 13;
- env 1 germinates conv_heavy in r0c0 and a ladder in r0c2, shrinks the ladder to 0 and grows it back (S, G),
  makes one invalid action, prunes the ladder at epoch 8, and has one step no policy answered (epoch 14).

A ladder seed's contribution at epoch t is 0.25 × the level it trained at, and accuracy rises one point an epoch,
so every post-op delta below can be worked out by hand.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import msgspec
import pytest
from fastapi.testclient import TestClient
from karn_fixtures import RunScript, publish

import leyline_schemas as L
from services.karn import queries, schema
from services.karn.api import create_app
from services.karn.ladder_report import ladder_report
from services.karn.store import RunStore, slim_step

B, S, Op = L.BlueprintAction, L.SeedStage, L.LifecycleOp
SLOTS = ["r0c0", "r0c1", "r0c2"]
LENGTH = 14
RUNG = 9 * 32 * 32 + 3 * 32  # one ladder rung at 32 channels (§6.4): 9,312 parameters
HEAVY = 18_560
LIVE = (S.TRAINING, S.BLENDING, S.HOLDING)

#: (env, epoch) → what the policy did: (op, slot, argument), or "invalid" / "unsampled" for a WAIT of that kind.
PLAN: dict[tuple[int, int], tuple[Op | str, str, object]] = {
    (0, 2): (Op.GERMINATE, "r0c1", B.CONV_LADDER),
    (0, 3): (Op.ADVANCE, "r0c1", S.TRAINING),
    (0, 4): (Op.GROW_INTERNAL, "r0c1", None),
    (0, 5): (Op.GROW_INTERNAL, "r0c1", None),
    (0, 6): (Op.SHRINK_INTERNAL, "r0c1", None),
    (0, 7): (Op.GROW_INTERNAL, "r0c1", None),
    (0, 9): (Op.ADVANCE, "r0c1", S.BLENDING),
    (0, 11): (Op.ADVANCE, "r0c1", S.HOLDING),
    (0, 13): (Op.FOSSILIZE, "r0c1", None),
    (1, 2): (Op.GERMINATE, "r0c0", B.CONV_HEAVY),
    (1, 3): (Op.GERMINATE, "r0c2", B.CONV_LADDER),
    (1, 4): (Op.ADVANCE, "r0c2", S.TRAINING),
    (1, 5): (Op.SHRINK_INTERNAL, "r0c2", None),
    (1, 6): (Op.GROW_INTERNAL, "r0c2", None),
    (1, 7): ("invalid", "", None),
    (1, 8): (Op.PRUNE, "r0c2", None),
    (1, 14): ("unsampled", "", None),
}


def _contribution(state: L.SlotState) -> float | None:
    """What the epoch trained with `state` measures: ladders 0.25 per level, other seeds 0.5, none before TRAINING."""
    if state.stage not in (*LIVE, S.FOSSILIZED):
        return None
    return 0.25 * state.internal_level if state.internal_kind is not L.SeedInternalKind.NONE else 0.5


def _params(state: L.SlotState) -> int:
    return state.internal_level * RUNG if state.blueprint is B.CONV_LADDER else HEAVY


def _masks(slots: dict[str, L.SlotState]) -> L.ActionMasks:
    ladders = [s.internal_kind is not L.SeedInternalKind.NONE and s.stage in LIVE for s in slots.values()]
    levels = [(s.internal_level, s.internal_max_level) for s in slots.values()]
    grow = [live and level < top for live, (level, top) in zip(ladders, levels, strict=True)]
    shrink = [live and level > 0 for live, (level, _) in zip(ladders, levels, strict=True)]
    op = [True, True, False, False, False, True, any(grow), any(shrink)]
    rows = [[True] * len(slots) if legal else [False] * len(slots) for legal in op[:6]] + [grow, shrink]
    return L.ActionMasks(
        op=op,
        slot_by_op=rows,
        blueprint=[True] * len(B),
        style=[True] * 4,
        tempo=[True] * 3,
        alpha_target=[True] * 3,
        alpha_speed=[True] * 4,
        alpha_curve=[True] * 5,
    )


def _act(
    env_id: int, epoch: int, slots: dict[str, L.SlotState]
) -> tuple[Op, str, L.DecisionOutcome, list[L.LifecyclePayload]]:
    """Apply the plan's action of this epoch to `slots`; the effective op, target, outcome and lifecycle events."""
    kind, slot, arg = PLAN.get((env_id, epoch), (Op.WAIT, "", None))
    if kind == "invalid":
        return Op.WAIT, "", L.DecisionOutcome.INVALID_ACTION, []
    if kind == "unsampled":
        return Op.WAIT, "", L.DecisionOutcome.POLICY_UNAVAILABLE, []
    assert isinstance(kind, Op)
    if kind is Op.WAIT:
        return Op.WAIT, "", L.DecisionOutcome.WAITED, []
    old = slots[slot]
    events: list[L.LifecyclePayload] = []
    if kind is Op.GERMINATE:
        assert isinstance(arg, B)
        spec = L.SEED_INTERNALS.get(arg)
        new = L.SlotState(
            slot_id=slot,
            stage=S.GERMINATED,
            seed_id=f"{slot}-{L.blueprint_name(arg)}-e{epoch}",
            blueprint=arg,
            germinated_epoch=epoch,
            internal_kind=spec.kind if spec else L.SeedInternalKind.NONE,
            internal_level=spec.initial_level if spec else 0,
            internal_max_level=spec.max_level if spec else 1,
        )
        events.append(
            L.SeedGerminated(
                slot_id=slot,
                seed_id=new.seed_id,
                blueprint=arg,
                params=_params(new),
                internal_level=new.internal_level,
                internal_max_level=new.internal_max_level,
            )
        )
    elif kind in L.INTERNAL_OPS:
        to = old.internal_level + (1 if kind is Op.GROW_INTERNAL else -1)
        new = msgspec.structs.replace(old, internal_level=to, internal_level_changed_epoch=epoch)
        events.append(
            L.SeedInternalLevelChanged(
                slot_id=slot,
                seed_id=old.seed_id,
                blueprint=old.blueprint,
                internal_kind=old.internal_kind,
                from_level=old.internal_level,
                to_level=to,
                max_level=old.internal_max_level,
                active_params=_params(new),
            )
        )
    else:
        stage = {Op.FOSSILIZE: S.FOSSILIZED, Op.PRUNE: S.PRUNED}.get(kind, arg)
        assert isinstance(stage, S)
        new = msgspec.structs.replace(old, stage=stage)
        events.append(
            L.SeedStageChanged(slot_id=slot, seed_id=old.seed_id, from_stage=old.stage.name, to_stage=stage.name)
        )
        if stage is S.FOSSILIZED:
            events.append(
                L.SeedFossilized(
                    slot_id=slot,
                    seed_id=old.seed_id,
                    blueprint=old.blueprint,
                    params_added=_params(old),
                    epochs_total=epoch - old.germinated_epoch,
                    internal_level=old.internal_level,
                )
            )
        if stage is S.PRUNED:
            events.append(
                L.SeedPruned(
                    slot_id=slot, seed_id=old.seed_id, blueprint=old.blueprint, reason="policy", initiator="policy"
                )
            )
    slots[slot] = new
    return kind, slot, L.DecisionOutcome.APPLIED, events


def ladder_run(run_id: str = "run-ladder") -> list[L.TelemetryEvent | L.StepRecord]:
    """The two-env run of the module docstring, in publication order."""
    run = RunScript(run_id=run_id, n_envs=2, episodes=2, episode_length=LENGTH, policy_id="ppo-ladder")
    items: list[L.TelemetryEvent | L.StepRecord] = [
        run.event(
            L.RunStarted(
                task="digits",
                n_envs=2,
                episodes=2,
                episode_length=LENGTH,
                slot_ids=SLOTS,
                policy_id="ppo-ladder",
                reward_mode=L.RewardMode.SHAPED,
            )
        )
    ]
    state = {e: {s: L.SlotState(slot_id=s) for s in SLOTS} for e in (0, 1)}
    for epoch in range(1, LENGTH + 1):
        for env_id in (0, 1):
            where = {"env_id": env_id, "episode": env_id, "epoch": epoch}
            slots = state[env_id]
            masks = _masks(slots)
            reports = [
                L.SlotReport(slot_id=s.slot_id, contribution=_contribution(s), seed_param_count=_params(s))
                for s in slots.values()
                if s.stage is not S.DORMANT and s.stage is not S.PRUNED
            ]
            op, target, outcome, events = _act(env_id, epoch, slots)
            acc = 60.0 + epoch
            report = L.EpochReport(
                epoch=epoch, max_epochs=LENGTH, train_loss=1.0, train_accuracy=acc, val_loss=1.0, val_accuracy=acc
            )
            report = msgspec.structs.replace(report, slots=reports, host_params=24_058)
            decision = None
            if outcome is not L.DecisionOutcome.POLICY_UNAVAILABLE:
                decision = L.Decision(policy_id="ppo-ladder", policy_version=0, action=L.FactoredAction(op=op))
            directive = L.StepDirective(
                run_id=run_id,
                env_id=env_id,
                episode=env_id,
                epoch=epoch,
                outcome=outcome,
                effective_op=op,
                raw_action=L.FactoredAction(op=op),
                decision=decision,
                target_slot=target,
                slots=list(slots.values()),
                observed_slots=[],
                masks=masks,
                lifecycle_events=events,
            )
            items.append(
                L.StepRecord(
                    run_id=run_id,
                    arm="main",
                    env_id=env_id,
                    episode=env_id,
                    step=epoch,
                    policy_id="ppo-ladder",
                    policy_version=0,
                    report=report,
                    directive=directive,
                    applied=True,
                    done=epoch == LENGTH,
                )
            )
            items.extend(run.event(payload, **where) for payload in events)
            text = {
                s.slot_id: "empty" if s.stage is S.DORMANT else f"{s.stage.name}:{L.blueprint_name(s.blueprint)}"
                for s in slots.values()
            }
            items.append(
                run.event(
                    L.EpochCompleted(val_accuracy=acc, val_loss=1.0, slots=text, op=op.name, target_slot=target),
                    **where,
                )
            )
    items.append(run.event(L.RunFinished(state="completed")))
    return items


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    opened = RunStore.open(tmp_path / "karn.sqlite")
    yield opened
    opened.close()


def _seed(store: RunStore, blueprint: str, env_id: int) -> dict[str, object]:
    (row,) = queries.seeds(store, "run-ladder", env_id=env_id, blueprint=blueprint)
    return row


def _rows(store: RunStore, run_id: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """Every seed row, and every step row but its arrival time, of a run."""
    seeds = store.read("SELECT * FROM seeds WHERE run_id = ? ORDER BY env_id, episode, seed_id", (run_id,))
    columns = [c for c in (r["name"] for r in store.read("PRAGMA table_info(steps)")) if c != "received_at"]
    steps = store.read(f"SELECT {', '.join(columns)} FROM steps WHERE run_id = ? ORDER BY env_id, step", (run_id,))
    return [tuple(r) for r in seeds], [tuple(r) for r in steps]


# -- store: migration v4, ingest, rebuild ------------------------------------------------------------------------


def test_invariant_42_migration_v4_upgrades_a_v3_store_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "v3.sqlite"
    schema.connect(path, target=3).close()  # a store written by the Karn of schema v3
    v3 = sqlite3.connect(path)
    v3.execute("INSERT INTO runs (run_id, task, n_envs, episodes, state) VALUES ('old', 'digits', 1, 1, 'completed')")
    v3.execute(
        "INSERT INTO seeds (run_id, env_id, episode, seed_id, slot_id, blueprint, stage, params) "
        "VALUES ('old', 0, 0, 'r0c0-norm-e1', 'r0c0', 'norm', 'FOSSILIZED', 64)"
    )
    v3.commit()
    columns = {r[1] for r in v3.execute("PRAGMA table_info(seeds)")}
    assert "internal_level" not in columns and v3.execute("PRAGMA user_version").fetchone()[0] == 3
    v3.close()
    with RunStore.open(path) as store:
        assert store.read("PRAGMA user_version")[0][0] == schema.SCHEMA_VERSION == 4
        (old,) = queries.seeds(store, "old")
        assert (old["params"], old["internal_level"], old["level_changes"], old["last_level_delta"]) == (64, 0, 0, 0)
        store.ingest(ladder_run())
        ladder = _seed(store, "conv_ladder", 0)
        assert (ladder["internal_level"], ladder["level_changes"], ladder["level_reversals"]) == (3, 4, 2)
        assert store.read("SELECT count(*) FROM steps WHERE internal_ops_legal = 1")[0][0] == 14


def test_invariant_42_level_events_update_the_seed_columns(store: RunStore) -> None:
    items = ladder_run()
    store.ingest(items)
    fossil = _seed(store, "conv_ladder", 0)
    assert (fossil["stage"], fossil["internal_level"], fossil["internal_max_level"]) == ("FOSSILIZED", 3, 4)
    assert (fossil["level_changes"], fossil["level_reversals"], fossil["last_level_delta"]) == (4, 2, 1)
    assert fossil["params"] == 3 * RUNG
    pruned = _seed(store, "conv_ladder", 1)
    assert (pruned["stage"], pruned["internal_level"], pruned["params"]) == ("PRUNED", 1, RUNG)
    assert (pruned["level_changes"], pruned["level_reversals"], pruned["last_level_delta"]) == (2, 1, 1)
    heavy = _seed(store, "conv_heavy", 1)
    assert (heavy["internal_level"], heavy["internal_max_level"], heavy["level_changes"]) == (0, 1, 0)

    # Midway, the columns follow each event: after G, G, S the level is 2 and the last move was down.
    with RunStore.open(store.path.with_name("midway.sqlite")) as midway:
        cut = next(
            i
            for i, item in enumerate(items)
            if isinstance(item, L.TelemetryEvent)
            and isinstance(item.payload, L.SeedInternalLevelChanged)
            and item.epoch == 6
        )
        midway.ingest(items[: cut + 1])
        (row,) = queries.seeds(midway, "run-ladder", env_id=0)
        assert (row["internal_level"], row["level_changes"], row["level_reversals"]) == (2, 3, 1)
        assert (row["last_level_delta"], row["params"]) == (-1, 2 * RUNG)

    history = queries.seed_lifecycle(store, "run-ladder", 0, 0, fossil["seed_id"])  # type: ignore[arg-type]
    assert history is not None
    kinds = [e["payload"]["kind"] for e in history["history"]]
    assert kinds.count("seed_internal_level_changed") == 4


def test_internal_ops_legal_is_read_from_the_masks_before_they_are_dropped(store: RunStore) -> None:
    items = ladder_run()
    store.ingest(items)
    legal = {
        (r["env_id"], r["step"])
        for r in store.read("SELECT env_id, step FROM steps WHERE run_id = 'run-ladder' AND internal_ops_legal = 1")
    }
    assert legal == {(0, t) for t in range(4, 14)} | {(1, t) for t in range(5, 9)}
    record = next(i for i in items if isinstance(i, L.StepRecord) and i.step == 4)
    assert slim_step(record).directive.masks is None  # the stored step keeps no masks: the column is all that is left


def test_invariant_42_the_rows_do_not_depend_on_how_the_streams_interleave(tmp_path: Path) -> None:
    """A rebuild replays TELEMETRY to its end, then STEPS; live, they arrive interleaved. The rows are the same."""
    items = ladder_run()
    with RunStore.open(tmp_path / "live.sqlite") as live, RunStore.open(tmp_path / "rebuilt.sqlite") as rebuilt:
        live.ingest(items)
        rebuilt.ingest([i for i in items if isinstance(i, L.TelemetryEvent)])
        rebuilt.ingest([i for i in items if isinstance(i, L.StepRecord)])
        assert _rows(rebuilt, "run-ladder") == _rows(live, "run-ladder")
        assert ladder_report(rebuilt, "run-ladder") == ladder_report(live, "run-ladder")


@pytest.mark.integration
def test_invariant_42_a_rebuild_from_the_log_gives_identical_rows(nats_url: str, tmp_path: Path) -> None:
    from services.karn.rebuild import rebuild
    from services.runtime import jetstream
    from services.runtime.bus import connect
    from services.runtime.settings import RuntimeSettings

    items = ladder_run("run-ladder-rebuild")

    async def _publish() -> None:
        nc = await connect(RuntimeSettings.from_env({"service": "test-karn-ladder", "nats_url": nats_url}))
        js = nc.jetstream()
        await jetstream.bootstrap(js)
        await publish(js, items)
        await nc.close()

    asyncio.run(_publish())
    with RunStore.open(tmp_path / "live.sqlite") as live:
        live.ingest(items)
        expected = _rows(live, "run-ladder-rebuild")
    asyncio.run(rebuild(nats_url, tmp_path / "rebuilt.sqlite"))
    with RunStore.open(tmp_path / "rebuilt.sqlite") as rebuilt:
        assert _rows(rebuilt, "run-ladder-rebuild") == expected
        seeds, steps = expected
        assert len(seeds) == 3 and len(steps) == 2 * LENGTH


# -- the ladder report -------------------------------------------------------------------------------------------


def test_the_ladder_report_counts_usage_germinations_and_invalid_actions(store: RunStore) -> None:
    store.ingest(ladder_run())
    report = ladder_report(store, "run-ladder")
    assert (report["steps"], report["sampled_decisions"], report["ladder_present_steps"]) == (28, 27, 14)
    # U over sampled, ladder-present steps: env 0 has 4 internal of 7 non-WAIT ops, env 1 has 2 of 3.
    assert report["usage"] == {"internal_ops": 6, "non_wait_ops": 10, "share": pytest.approx(0.6)}
    assert report["ops"]["GROW_INTERNAL"] == 4 and report["ops"]["SHRINK_INTERNAL"] == 2
    assert (report["invalid_actions"], report["invalid_action_rate"]) == (1, pytest.approx(1 / 27))
    assert report["applied_internal_ops"] == report["level_events"] == 6  # A1's plumbing check
    assert report["germinations"] == {"conv_heavy": 1, "conv_ladder": 2}
    assert report["conv_heavy_share"] == pytest.approx(1 / 3)
    assert report["blueprint_shares"]["conv_ladder"] == pytest.approx(2 / 3)


def test_the_ladder_report_gives_each_ladder_seed_its_thrash_figures(store: RunStore) -> None:
    store.ingest(ladder_run())
    report = ladder_report(store, "run-ladder")
    fossil, pruned = report["seeds"]
    # G, G, S, G over live epochs 3–12; nothing moved in the last five of them.
    assert (fossil["ops"], fossil["reversals"], fossil["net_level_change"], fossil["live_epochs"]) == (4, 2, 2, 10)
    assert fossil["reversal_rate"] == pytest.approx(2 / 3) and fossil["density"] == pytest.approx(0.4)
    assert fossil["settled"] and (fossil["density_band"], fossil["reversal_band"]) == ("caution", "caution")
    assert (fossil["level_changes"], fossil["level_reversals"]) == (fossil["ops"], fossil["reversals"])
    # S, G over live epochs 4–7, pruned while still moving.
    assert (pruned["ops"], pruned["reversals"], pruned["net_level_change"], pruned["live_epochs"]) == (2, 1, 0, 4)
    assert pruned["reversal_rate"] == 1.0 and pruned["density"] == 0.5 and not pruned["settled"]
    assert report["thrash"] == {
        "ladder_seeds": 2,
        "median_reversal_rate": pytest.approx((2 / 3 + 1.0) / 2),
        "thrash_share": 0.0,  # only the fossil has four ops, and 2/3 is not above 0.7
        "mean_density": pytest.approx(0.45),
        "settled_share": 0.5,
    }


def test_the_ladder_report_sets_post_op_deltas_against_the_wait_baseline(store: RunStore) -> None:
    store.ingest(ladder_run())
    k1, k2, k3 = ladder_report(store, "run-ladder")["post_op"]
    # Grows: env 0 at 4, 5, 7 and env 1 at 6; env 1's Δc_3 would read the pruned seed's epoch 9, so it is skipped.
    assert [k["grow_internal"]["n"] for k in (k1, k2, k3)] == [4, 4, 3]
    assert [k["grow_internal"]["delta_contribution"] for k in (k1, k2, k3)] == [0.25, 0.25, 0.25]
    assert [k["shrink_internal"]["delta_contribution"] for k in (k1, k2, k3)] == [-0.25, 0.0, 0.0]
    assert k1["internal"]["n"] == 6 and k1["internal"]["delta_contribution"] == pytest.approx(0.5 / 6)
    assert [k["internal"]["delta_accuracy"] for k in (k1, k2, k3)] == [1.0, 2.0, 3.0]
    # WAITs with a live ladder: env 0 at 8, 10, 12 and env 1's invalid action at 7 (effectively a WAIT).
    assert [k["wait"]["n"] for k in (k1, k2, k3)] == [4, 3, 2]
    assert all(k["wait"]["delta_contribution"] == 0.0 for k in (k1, k2, k3))
    assert k1["delta_contribution_vs_wait"] == pytest.approx(0.5 / 6) and k2["delta_accuracy_vs_wait"] == 0.0
    assert not any(k["wait_baseline_trusted"] for k in (k1, k2, k3)), "fewer than 10 WAIT samples"


def test_the_ladder_report_window_and_a_run_without_ladders(store: RunStore) -> None:
    store.ingest(ladder_run())
    env1 = ladder_report(store, "run-ladder", first_episode=1)
    assert env1["steps"] == 14 and env1["germinations"] == {"conv_heavy": 1, "conv_ladder": 1}
    assert [s["env_id"] for s in env1["seeds"]] == [1] and env1["level_events"] == 2
    env0 = ladder_report(store, "run-ladder", last_episode=0)
    assert env0["usage"]["share"] == pytest.approx(4 / 7) and env0["invalid_actions"] == 0
    empty = ladder_report(store, "run-ladder", first_episode=5)
    assert empty["usage"]["share"] is None and empty["conv_heavy_share"] is None and empty["seeds"] == []
    assert empty["thrash"]["median_reversal_rate"] is None and empty["post_op"][0]["wait"]["n"] == 0
    with pytest.raises(queries.UnknownRun):
        ladder_report(store, "no-such-run")


def test_the_api_serves_the_ladder_report_and_404s_an_unknown_run(tmp_path: Path) -> None:
    path = tmp_path / "karn.sqlite"
    with RunStore.open(path) as store:
        store.ingest(ladder_run())
    with TestClient(create_app(path)) as client:
        reply = client.get("/runs/run-ladder/ladder", params={"last_episode": 0})
        assert reply.status_code == 200
        assert reply.json()["usage"]["internal_ops"] == 4 and reply.json()["seeds"][0]["ops"] == 4
        missing = client.get("/runs/nope/ladder")
        assert missing.status_code == 404 and missing.json()["run_id"] == "nope"
        assert client.get("/runs/run-ladder/ladder", params={"first_episode": -1}).status_code == 422
