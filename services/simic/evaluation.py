"""Re-scoring stored sequences at the network's current weights: the anchor pass and every minibatch (§4.10, §5.9)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from leyline_schemas import HEAD_NAMES
from services.policy.network import FactoredRecurrentActorCritic
from services.policy.sampling import evaluate_actions
from services.simic.rollout import RolloutBatch


@dataclass
class Evaluation:
    """What the network says about a set of stored sequences at its current weights."""

    log_probs: dict[str, torch.Tensor]
    entropies: dict[str, torch.Tensor]
    values: torch.Tensor
    q_values: torch.Tensor
    contributions: torch.Tensor
    features: torch.Tensor
    bootstrap_values: torch.Tensor | None = None


def evaluate_sequences(
    network: FactoredRecurrentActorCritic, batch: RolloutBatch, rows: torch.Tensor, *, with_bootstrap: bool = False
) -> Evaluation:
    """Unroll whole sequences `rows` from the zero hidden state and re-score their stored actions (§4.10)."""
    obs = batch.obs[rows]
    state = network.initial_state(len(rows))
    out = network(obs, batch.blueprints[rows], state, batch.starts[rows])
    masks = {head: batch.masks[head][rows] for head in HEAD_NAMES}
    actions = {head: batch.actions[head][rows] for head in HEAD_NAMES}
    log_probs, entropies = evaluate_actions(out.logits, masks, actions)
    q_values = network.q_value(out.features, actions["op"])
    contributions = network.contributions(out.features)
    bootstrap_values = None
    if with_bootstrap:
        # V(s_{T+1}) from the hidden state carried out of the unroll, never a reset one (§5.4).
        boot = network(batch.bootstrap_obs[rows].unsqueeze(1), batch.bootstrap_blueprints[rows].unsqueeze(1), out.state)
        bootstrap_values = boot.value[:, 0] * batch.bootstrap[rows].float()
    return Evaluation(log_probs, entropies, out.value, q_values, contributions, out.features, bootstrap_values)
