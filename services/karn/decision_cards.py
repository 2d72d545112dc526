"""Decision cards (plans/karn2-sanctum-v2.md §4.9): the newest decisions worth reading, at a pace a person can read.

At most three cards. A new one appears at most once every five seconds of the caller's clock, and successive cards
come from different envs whenever more than one env has decided. Pure: the time is passed in, so the throttle is
tested with a fake clock.
"""

from __future__ import annotations

import statistics
from collections import deque

from leyline_schemas import GerminationStyle, LifecycleOp, StepRecord, TempoAction, blueprint_name
from leyline_schemas.heads import causal_heads, op_conditioned_mask
from services.karn.snapshot import DecisionCard

MAX_CARDS = 3
#: §9 Choices: a new card at most every 5 s (an older doc said 30 s).
CARD_INTERVAL_SECONDS = 5.0
TEMPO_GLYPHS = {TempoAction.FAST: ">>>", TempoAction.STANDARD: ">>", TempoAction.SLOW: ">"}
#: §4.9's style words: lin+add, lin×mul, sig+add, gate.
STYLE_LABELS = {
    GerminationStyle.LINEAR_ADD: "lin+add",
    GerminationStyle.LINEAR_MULTIPLY: "lin×mul",
    GerminationStyle.SIGMOID_ADD: "sig+add",
    GerminationStyle.GATED_GATE: "gate",
}


def card_of(record: StepRecord) -> DecisionCard:
    """A card for one decided step: what was chosen, how sure the policy was and what it expected."""
    directive = record.directive
    decision = directive.decision
    op = directive.effective_op
    heads = sorted(causal_heads(op))
    entropy = statistics.fmean(getattr(decision.entropies, h) for h in heads) if decision is not None else None
    forced: tuple[str, ...] = ()
    if directive.masks is not None:
        forced = tuple(h for h in heads if sum(op_conditioned_mask(directive.masks, op, h)) == 1)
    action = directive.raw_action
    germinate = op is LifecycleOp.GERMINATE
    return DecisionCard(
        env_id=record.env_id,
        episode=record.episode,
        epoch=record.step,
        op=op.name,
        slot=directive.target_slot,
        confidence=decision.confidence if decision is not None else None,
        accuracy=record.report.val_accuracy,
        entropy=entropy,
        value=decision.value if decision is not None else None,
        forced=forced,
        policy_id=record.policy_id,
        policy_version=record.policy_version,
        blueprint=blueprint_name(action.blueprint) if germinate else "",
        tempo=TEMPO_GLYPHS.get(TempoAction(action.tempo), "") if germinate else "",
        style=STYLE_LABELS[GerminationStyle(action.style)] if germinate else "",
        reason=decision.reason if decision is not None else "",
    )


class DecisionCards:
    """The newest decided step of each env (`offer`), turned into cards at most every 5 s (`cards`)."""

    def __init__(self, interval: float = CARD_INTERVAL_SECONDS, max_cards: int = MAX_CARDS) -> None:
        self.interval = interval
        self._offers: dict[int, StepRecord] = {}
        self._shown: dict[int, tuple[int, int]] = {}
        self._cards: deque[DecisionCard] = deque(maxlen=max_cards)
        self._last_time: float | None = None
        self._last_env: int | None = None

    def offer(self, record: StepRecord) -> None:
        if record.directive.decision is None:
            return  # a synthetic step (e.g. the off-switch control): nothing was decided
        held = self._offers.get(record.env_id)
        if held is None or (record.episode, record.step) >= (held.episode, held.step):
            self._offers[record.env_id] = record

    def _fresh_envs(self) -> list[int]:
        return sorted(env for env, r in self._offers.items() if self._shown.get(env, (-1, -1)) < (r.episode, r.step))

    def cards(self, now: float) -> tuple[DecisionCard, ...]:
        """The cards to show at `now`, newest first, after adding at most one new card."""
        due = self._last_time is None or now - self._last_time >= self.interval
        fresh = self._fresh_envs()
        if due and fresh:
            others = [env for env in fresh if env != self._last_env]
            after = [env for env in others if self._last_env is None or env > self._last_env]
            env = (after or others or fresh)[0]  # round-robin over the envs with something new
            record = self._offers[env]
            self._cards.appendleft(card_of(record))
            self._shown[env] = (record.episode, record.step)
            self._last_time, self._last_env = now, env
        return tuple(self._cards)
