"""One policy line as Sanctum sees it: its decisions in this run and the PPO updates that made its versions."""

from __future__ import annotations

import statistics
from collections import Counter, deque
from dataclasses import dataclass, field

from leyline_schemas import HEAD_NAMES, PPOUpdateCompleted
from services.karn.snapshot import PolicyView


@dataclass
class PolicyLine:
    """What the aggregator knows of one policy id; `view` renders it for a Tamiyo panel."""

    policy_id: str
    version: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    decision_entropies: deque[tuple[float, ...]] = field(default_factory=lambda: deque(maxlen=64))
    acted_versions: deque[int] = field(default_factory=lambda: deque(maxlen=64))
    updates: list[PPOUpdateCompleted] = field(default_factory=list)
    load_failure: str = ""

    def view(self) -> PolicyView:
        """Per-head entropy from the latest update, else from recent decisions; version lag likewise."""
        last = self.updates[-1] if self.updates else None
        if last is not None and last.head_entropies:
            heads = tuple(sorted(last.head_entropies.items()))
            source = f"PPO v{last.version}"
        elif self.decision_entropies:
            means = [statistics.fmean(column) for column in zip(*self.decision_entropies, strict=True)]
            heads = tuple((h, m) for h, m in zip(HEAD_NAMES, means, strict=True) if m > 0)
            source = f"last {len(self.decision_entropies)} decisions"
        else:
            heads, source = (), "none"
        if last is not None:
            lag: float | None = last.version_lag_mean
        elif self.acted_versions:
            lag = self.version - statistics.fmean(self.acted_versions)
        else:
            lag = None
        return PolicyView(
            policy_id=self.policy_id,
            version=self.version,
            decisions=sum(self.actions.values()),
            actions=tuple(self.actions.most_common()),
            head_entropies=heads,
            entropy_source=source,
            updates=len(self.updates),
            policy_loss=last.policy_loss if last else None,
            value_loss=last.value_loss if last else None,
            entropy=last.entropy if last else None,
            approx_kl=last.approx_kl if last else None,
            clip_fraction=last.clip_fraction if last else None,
            explained_variance=last.explained_variance if last else None,
            version_lag=lag,
            kl_history=tuple(u.approx_kl for u in self.updates[-30:]),
            value_loss_history=tuple(u.value_loss for u in self.updates[-30:]),
            load_failure=self.load_failure,
            architecture=last.architecture if last else None,
            slot_attention=tuple(last.slot_attention.items()) if last else (),
        )
