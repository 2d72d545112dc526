"""Decision cards (plans/karn2-sanctum-v2.md §4.9, check K13): at most three, one new card per 5 s of the caller's
clock, rotating across the envs that decided; each card's fields come from the step record, and what the policy did
not send reads as missing."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st
from karn_fixtures import feed, script
from rich.console import Console

import leyline_schemas as L
from services.karn.aggregator import SanctumAggregator
from services.karn.decision_cards import CARD_INTERVAL_SECONDS, MAX_CARDS, DecisionCards, card_of
from services.karn.sanctum.decisions_panel import CARD_LABELS, DecisionsPanel
from services.karn.sanctum.help.registry import PANELS

ALL = [True] * 8


def _record(env: int, step: int, op: L.LifecycleOp = L.LifecycleOp.WAIT, *, decided: bool = True) -> L.StepRecord:
    masks = L.ActionMasks(
        op=[True] * len(L.LifecycleOp),
        slot_by_op=[[True, False, False]] * len(L.LifecycleOp),  # one legal slot: the slot head is forced
        blueprint=[True] * 15,
        style=[True] * 4,
        tempo=[True] * 3,
        alpha_target=[True] * 3,
        alpha_speed=[True] * 4,
        alpha_curve=[True] * 3,
    )
    action = L.FactoredAction(op=op, blueprint=L.BlueprintAction.CONV_LIGHT, tempo=L.TempoAction.FAST, style=2)
    decision = L.Decision(
        policy_id="ppo-x",
        policy_version=3,
        action=action,
        entropies=L.HeadValues(op=0.6, slot=0.0, blueprint=0.3, tempo=0.3, style=0.3, alpha_target=0.3),
        value=1.25,
        confidence=0.4,
    )
    directive = L.StepDirective(
        run_id="r",
        env_id=env,
        episode=0,
        epoch=step,
        outcome=L.DecisionOutcome.APPLIED,
        effective_op=op,
        raw_action=action,
        decision=decision if decided else None,
        target_slot="r0c0",
        masks=masks,
    )
    report = L.EpochReport(epoch=step, max_epochs=20, train_loss=1.0, train_accuracy=50.0, val_loss=1.0,
                           val_accuracy=61.5)  # fmt: skip
    return L.StepRecord(run_id="r", arm="main", env_id=env, episode=0, step=step, policy_id="ppo-x",
                        policy_version=3, report=report, directive=directive, applied=True)  # fmt: skip


def test_a_card_reads_its_fields_from_the_step_record() -> None:
    card = card_of(_record(2, 7, L.LifecycleOp.GERMINATE))
    assert (card.env_id, card.epoch, card.op, card.slot) == (2, 7, "GERMINATE", "r0c0")
    assert (card.confidence, card.value, card.accuracy) == (0.4, 1.25, 61.5)
    # Mean over GERMINATE's causal heads: op, slot, blueprint, tempo, style, alpha_target.
    assert card.entropy is not None and abs(card.entropy - (0.6 + 0.0 + 0.3 * 4) / 6) < 1e-12
    assert card.forced == ("slot",)
    assert (card.blueprint, card.tempo, card.style) == ("conv_light", ">>>", "sig+add")
    wait = card_of(_record(1, 3))
    assert wait.entropy == 0.6 and wait.blueprint == "" and wait.forced == ()  # WAIT: the op head alone


def test_cards_are_at_most_three_one_per_interval_and_rotate_across_envs() -> None:  # K13
    cards = DecisionCards()
    for env in (0, 1, 2):
        cards.offer(_record(env, 1))
    shown = [cards.cards(t) for t in (0.0, 1.0, 4.99)]
    assert [len(s) for s in shown] == [1, 1, 1], "no new card within 5 s of the previous one"
    assert cards.cards(CARD_INTERVAL_SECONDS)[0].env_id != shown[0][0].env_id
    later = cards.cards(2 * CARD_INTERVAL_SECONDS)
    assert [c.env_id for c in later] == [2, 1, 0], "newest first, one env after another"
    for env in (0, 1, 2):
        cards.offer(_record(env, 2))
    final = cards.cards(3 * CARD_INTERVAL_SECONDS)
    assert len(final) == MAX_CARDS and final[0].env_id == 0 and final[0].epoch == 2
    assert cards.cards(3.5 * CARD_INTERVAL_SECONDS) == final, "nothing new within the interval"


def test_a_synthetic_step_makes_no_card_and_one_env_may_follow_itself() -> None:
    cards = DecisionCards()
    cards.offer(_record(0, 1, decided=False))
    assert cards.cards(0.0) == ()
    cards.offer(_record(0, 2))
    cards.offer(_record(0, 1))  # an older step never replaces a newer one
    assert [c.epoch for c in cards.cards(0.0)] == [2]
    cards.offer(_record(0, 3))  # only one env has decided: its next card may follow its last one
    assert [c.epoch for c in cards.cards(CARD_INTERVAL_SECONDS)] == [3, 2]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.floats(0.0, 3.0)), min_size=1, max_size=40))
def test_the_throttle_holds_for_any_arrival_order(arrivals: list[tuple[int, float]]) -> None:  # K13
    cards, now = DecisionCards(), 0.0
    newest = None
    appeared: list[float] = []
    for step, (env, gap) in enumerate(arrivals, start=1):
        now += gap
        cards.offer(_record(env, step))
        shown = cards.cards(now)
        assert len(shown) <= MAX_CARDS
        if shown and shown[0] is not newest:
            newest = shown[0]
            appeared.append(now)
    assert appeared, "the first decided step always makes a card"
    assert all(b - a >= CARD_INTERVAL_SECONDS for a, b in itertools.pairwise(appeared))


def test_the_aggregator_hands_cards_to_the_snapshot_and_the_panel_renders_them() -> None:
    run = script("run-cards", learn=True, policy_id="ppo-cards")
    aggregator = SanctumAggregator("run-cards")
    feed(aggregator, run.items)
    first = aggregator.snapshot(1000.0).decisions
    assert len(first) == 1 and first[0].policy_id == "ppo-cards"
    assert len(aggregator.snapshot(1001.0).decisions) == 1
    panel = DecisionsPanel()
    panel.cards = aggregator.snapshot(1000.0 + CARD_INTERVAL_SECONDS).decisions
    console = Console(width=80, record=True)
    console.print(panel.render())
    text = console.export_text()
    for label in CARD_LABELS:
        assert PANELS["decisions"].field(label) is not None, label
    for label in ("conf", "H", "V", "reward —"):
        assert label in text, label
    empty = DecisionsPanel()
    console = Console(width=80, record=True)
    console.print(empty.render())
    assert "no decision yet" in console.export_text()
