"""Small learned policies, valid decision requests and published versions for Tamiyo's tests."""

from __future__ import annotations

from nats.js import JetStreamContext

import leyline_schemas as L
from services.kasmina.masks import compute_masks
from services.observation.features import observation_size
from services.policy.network import FactoredRecurrentActorCritic, NetworkConfig, seeded_network
from services.policy.normalization import ObservationNormalizer
from services.policy.pointers import put_weights, write_pointer
from services.policy.weights import encode_policy
from services.runtime import jetstream

SLOT_IDS = ("r0c0", "r0c1")


def tiny_config(num_slots: int = 2) -> NetworkConfig:
    return NetworkConfig(num_slots=num_slots, hidden=16, head_hidden=8)


def tiny_network(num_slots: int = 2, seed: int = 0) -> FactoredRecurrentActorCritic:
    return seeded_network(tiny_config(num_slots), seed)


def policy_blob(policy_id: str, version: int, *, seed: int = 0, num_slots: int = 2) -> bytes:
    network = tiny_network(num_slots, seed)
    return encode_policy(network, ObservationNormalizer(network.config.obs_size), policy_id=policy_id, version=version)


def slot_config(num_slots: int = 2) -> L.SlotConfig:
    return L.SlotConfig(
        topology=L.Topology.CNN,
        slots=[L.SlotSpec(slot_id=s, channels=16, order=i) for i, s in enumerate(SLOT_IDS[:num_slots])],
    )


def decision_request(
    policy_id: str,
    *,
    num_slots: int = 2,
    epoch: int = 1,
    env_id: int = 0,
    policy_state: bytes = b"",
    observation: list[float] | None = None,
    slots: list[L.SlotState] | None = None,
    deterministic: bool = False,
) -> L.DecisionRequest:
    states = slots or [L.SlotState(slot_id=s) for s in SLOT_IDS[:num_slots]]
    masks = compute_masks(states, slot_config(num_slots), L.LifecycleConfig(), 0, epoch=1)
    return L.DecisionRequest(
        run_id="policy-test",
        env_id=env_id,
        episode=0,
        epoch=epoch,
        policy_id=policy_id,
        topology=L.Topology.CNN,
        slot_ids=list(SLOT_IDS[:num_slots]),
        observation=observation if observation is not None else [0.1] * observation_size(num_slots),
        blueprint_indices=[-1] * num_slots,
        masks=masks,
        slots=states,
        policy_state=policy_state,
        deterministic=deterministic,
    )


async def publish_version(js: JetStreamContext, policy_id: str, version: int, blob: bytes) -> L.ActivePolicy:
    """What Simic does for a new version: the blob first, then the pointer Tamiyo follows."""
    pointer = await put_weights(await jetstream.weights_store(js), policy_id, version, blob)
    await write_pointer(await jetstream.policies_bucket(js), pointer)
    return pointer
