"""The learned policy behind a `learned` policy line: one stateless decision per request.

The LSTM's (h, c) travels as float32 bytes in `policy_state` (empty = zeros at an episode start), so any Tamiyo
instance can answer any request (ARCHITECTURE.md §2.2). The observation is normalised with the statistics that
were published WITH the weights (reference/tamiyo_simic.md §1.18).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from leyline_schemas.decisions import Decision, DecisionRequest, FactoredAction, HeadValues
from leyline_schemas.enums import (
    AlphaCurveAction,
    AlphaSpeedAction,
    AlphaTargetAction,
    BlueprintAction,
    GerminationStyle,
    LifecycleOp,
    TempoAction,
)
from services.policy.network import FactoredRecurrentActorCritic, LSTMState
from services.policy.normalization import ObservationNormalizer
from services.policy.sampling import SampledAction, sample_action
from services.policy.weights import PolicyWeights
from services.tamiyo.inference import DecisionKernel

_WIRE_FLOAT32 = np.dtype("<f4")


class PolicyInputError(ValueError):
    """A request this policy cannot answer; `field` names the offending request field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def unpack_state(policy_state: bytes, layers: int, hidden: int) -> LSTMState:
    """(h, c) each [layers, 1, hidden] from packed float32 bytes; empty bytes are the zero state."""
    if not policy_state:
        zeros = torch.zeros(layers, 1, hidden)
        return zeros, zeros.clone()
    expected = 2 * layers * hidden
    if len(policy_state) != 4 * expected:
        raise PolicyInputError(
            "policy_state",
            f"policy_state has {len(policy_state)} bytes; this policy's recurrent state is {expected} float32 "
            f"values ({4 * expected} bytes) or empty at an episode start",
        )
    # The wire format is little-endian float32 (leyline_schemas.codec.pack_float32); read as an array, not a list
    # of Python floats (~55 µs of a decision at hidden 512, `esper bench decision`).
    values = torch.from_numpy(np.frombuffer(policy_state, dtype=_WIRE_FLOAT32).astype(np.float32))
    if not bool(torch.isfinite(values).all()):
        raise PolicyInputError("policy_state", "policy_state holds non-finite values")
    h, c = values.view(2, layers, 1, hidden).unbind(0)
    return h.contiguous(), c.contiguous()


def pack_state(state: LSTMState) -> bytes:
    """(h, c) as the bytes `unpack_state` reads: what `leyline_schemas.codec.pack_float32` writes, without a list."""
    flat = torch.cat([state[0].reshape(-1), state[1].reshape(-1)]).float()
    return flat.numpy().astype(_WIRE_FLOAT32, copy=False).tobytes()


def request_generator(request: DecisionRequest, version: int) -> torch.Generator:
    """A generator seeded from the request alone, so a decision is reproducible and needs no instance state."""
    key = f"{request.run_id}/{request.env_id}/{request.episode}/{request.epoch}/{version}".encode()
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1)


def factored_action(action: dict[str, int]) -> FactoredAction:
    return FactoredAction(
        op=LifecycleOp(action["op"]),
        slot=action["slot"],
        blueprint=BlueprintAction(action["blueprint"]),
        style=GerminationStyle(action["style"]),
        tempo=TempoAction(action["tempo"]),
        alpha_target=AlphaTargetAction(action["alpha_target"]),
        alpha_speed=AlphaSpeedAction(action["alpha_speed"]),
        alpha_curve=AlphaCurveAction(action["alpha_curve"]),
    )


class LearnedPolicy:
    """A loaded version of a learned line: weights, observation stats, and `decide`."""

    def __init__(
        self,
        network: FactoredRecurrentActorCritic,
        normalizer: ObservationNormalizer,
        *,
        policy_id: str,
        version: int,
        value_scale: float = 1.0,
        sha256: str = "",
    ) -> None:
        if normalizer.size != network.config.obs_size:
            raise ValueError(f"normalizer has {normalizer.size} features, network expects {network.config.obs_size}")
        # Decisions run on the kernel's own copy of the weights; the module tree is not kept (it would double the
        # memory of every loaded version).
        self.config = network.config
        self.kernel = DecisionKernel(network.eval())
        self.normalizer = normalizer
        self.policy_id = policy_id
        self.version = version
        self.value_scale = value_scale
        self.sha256 = sha256

    @staticmethod
    def from_weights(weights: PolicyWeights, *, policy_id: str, sha256: str = "") -> LearnedPolicy:
        return LearnedPolicy(
            weights.network,
            weights.normalizer,
            policy_id=policy_id,
            version=weights.version,
            value_scale=weights.value_scale,
            sha256=sha256,
        )

    @property
    def num_slots(self) -> int:
        return self.config.num_slots

    def _inputs(self, request: DecisionRequest) -> tuple[torch.Tensor, torch.Tensor, LSTMState]:
        config = self.config
        if len(request.slot_ids) != config.num_slots:
            raise PolicyInputError(
                "slot_ids", f"{self.policy_id} v{self.version} has {config.num_slots} slots, request {request.slot_ids}"
            )
        if len(request.observation) != config.obs_size:
            raise PolicyInputError(
                "observation", f"observation has {len(request.observation)} features, expected {config.obs_size}"
            )
        obs = torch.tensor(request.observation, dtype=torch.float32)
        if not bool(torch.isfinite(obs).all()):
            raise PolicyInputError("observation", "observation holds NaN or infinite values")
        indices = torch.tensor(request.blueprint_indices, dtype=torch.long)
        state = unpack_state(request.policy_state, config.lstm_layers, config.hidden)
        return self.normalizer.normalize(obs), indices, state

    def decide(self, request: DecisionRequest) -> Decision:
        """Sample a factored action (argmax when `deterministic`) with its log-probs, V(s) and the new state.

        The value is reported in return units: the critic's output times the value scale published with the weights.
        """
        obs, indices, state = self._inputs(request)
        with torch.inference_mode():
            logits, value_tensor, out_state = self.kernel.step(obs, indices, state)
            sampled = self._sample(request, logits)
            value = float(value_tensor.item()) * self.value_scale
            new_state = pack_state(out_state)
        return self._decision(sampled, value, new_state)

    def decide_many(self, requests: Sequence[DecisionRequest]) -> list[Decision | PolicyInputError]:
        """`decide` for each request, the network evaluated once for all of them (Tamiyo's dynamic batching).

        A request this policy cannot answer gets its PolicyInputError in its place; the others are decided. Each
        request samples with its own generator, as alone; the batched matmuls may round differently from single
        ones (float32 rounding), which the sampled actions do not see in practice (tests/tamiyo).
        """
        results: list[Decision | PolicyInputError | None] = [None] * len(requests)
        valid: list[tuple[int, DecisionRequest, torch.Tensor, torch.Tensor, LSTMState]] = []
        for index, request in enumerate(requests):
            try:
                valid.append((index, request, *self._inputs(request)))
            except PolicyInputError as exc:
                results[index] = exc
        if valid:
            self._decide_rows(valid, results)
        return [r for r in results if r is not None]

    def _decide_rows(
        self,
        valid: list[tuple[int, DecisionRequest, torch.Tensor, torch.Tensor, LSTMState]],
        results: list[Decision | PolicyInputError | None],
    ) -> None:
        obs = torch.stack([v[2] for v in valid])
        indices = torch.stack([v[3] for v in valid])
        state = (torch.cat([v[4][0] for v in valid], 1), torch.cat([v[4][1] for v in valid], 1))
        with torch.inference_mode():
            logits, values, out_state = self.kernel.step_batch(obs, indices, state)
            value_list = values.tolist()
            for row, (index, request, *_) in enumerate(valid):
                sampled = self._sample(request, logits.row(row))
                new_state = pack_state((out_state[0][:, row : row + 1], out_state[1][:, row : row + 1]))
                results[index] = self._decision(sampled, value_list[row] * self.value_scale, new_state)

    def _sample(self, request: DecisionRequest, logits: Mapping[str, torch.Tensor]) -> SampledAction:
        return sample_action(
            logits,
            request.masks,
            deterministic=request.deterministic,
            generator=request_generator(request, self.version),
        )

    def _decision(self, sampled: SampledAction, value: float, new_state: bytes) -> Decision:
        action = factored_action(sampled.action)
        return Decision(
            policy_id=self.policy_id,
            policy_version=self.version,
            action=action,
            log_probs=HeadValues(**sampled.log_probs),
            entropies=HeadValues(**sampled.entropies),
            value=value,
            policy_state=new_state,
            confidence=math.exp(sum(sampled.log_probs.values())),
            reason=f"learned v{self.version}: {action.op.name.lower()}",
        )
