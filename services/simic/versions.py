"""Publishing a learning arm's policy versions on the bus, and bringing an arm back after a restart.

A commit goes blob → checkpoint → telemetry → KV pointer, and only then are the round's step records acked, so
whatever point a learner dies at, the next one either replays the round or finds it committed. Telemetry ids are
derived from (kind, run, line, version), so a replayed announcement inside JetStream's window is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from leyline_schemas import ActivePolicy, PolicyUpdated, PPOUpdateCompleted, RunSpec
from leyline_schemas.policy_ids import BUILTIN_POLICY_IDS
from services.policy.network import ARCHITECTURE
from services.policy.pointers import (
    delete_weights,
    fetch_object,
    put_weights,
    read_pointer,
    stored_versions,
    write_pointer,
)
from services.policy.weights import PolicyBlobError, decode_policy
from services.runtime.bus import TelemetryPublisher
from services.simic.learner import ArmLearner, LearnerConfig, RoundUpdate, checkpoint_object

log = logging.getLogger("esper.simic.versions")


def ppo_event(learner: ArmLearner, update: RoundUpdate) -> PPOUpdateCompleted:
    """The §5.16 diagnostics of one update, with the version lag and staleness figures of its round."""
    stats = update.stats
    return PPOUpdateCompleted(
        policy_id=learner.policy_id,
        version=update.version,
        policy_loss=stats.policy_loss,
        value_loss=stats.value_loss,
        entropy=stats.head_entropies.get("op", 0.0),
        approx_kl=stats.approx_kl,
        clip_fraction=stats.clip_fraction,
        explained_variance=stats.explained_variance,
        epochs_run=stats.epochs_run,
        steps=update.steps,
        head_entropies=stats.head_entropies,
        version_lag_mean=update.lag_mean,
        update_seconds=stats.update_seconds,
        skipped=update.skipped,
        architecture=ARCHITECTURE,
        diagnostics={
            **stats.diagnostics,
            "round": float(update.round_index),
            "episodes": float(update.episodes),
            "stale_episodes": float(update.stale_episodes),
            "version_lag_max": float(update.lag_max),
            "mean_return": update.mean_return,
            "q_loss": stats.q_loss,
            "aux_loss": stats.aux_loss,
            "entropy_loss": stats.entropy_loss,
            "floor_penalty": stats.floor_penalty,
            "early_stopped": float(stats.early_stopped),
            "updated_at": time.time(),
        },
    )


@dataclass
class VersionPublisher:
    """The weights store, the policy pointers and telemetry, as one learner sees them."""

    store: ObjectStore
    policies: KeyValue
    telemetry: TelemetryPublisher
    keep_versions: int = 0  # blobs kept per line, newest first; 0 keeps every version
    on_pruned: Callable[[int], None] | None = None

    async def load_arm(self, spec: RunSpec, index: int, config: LearnerConfig) -> ArmLearner:
        """This run's checkpoint if there is one, else the line's current version, else a fresh version 0."""
        arm = spec.arms[index]
        if arm.policy_id in BUILTIN_POLICY_IDS:
            raise ValueError(f"arm {arm.arm_id}: {arm.policy_id!r} is a built-in policy, not a line to train")
        checkpoint = await fetch_object(self.store, checkpoint_object(spec.run_id, arm.arm_id))
        if checkpoint is not None:
            learner = await asyncio.to_thread(ArmLearner.restore, spec, index, config, checkpoint)
            pointer = await read_pointer(self.policies, arm.policy_id)
            if pointer is None or pointer.version < learner.version:
                # Killed between the checkpoint and the pointer: finish that commit now, telemetry included.
                event = None
                if learner.note:
                    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                        event = msgspec.json.decode(learner.note.encode(), type=PPOUpdateCompleted)
                await self.publish(spec, learner, learner.policy_blob(), event)
            log.info("%s/%s: resumed %s at v%d", spec.run_id, arm.arm_id, arm.policy_id, learner.version)
            return learner
        pointer = await read_pointer(self.policies, arm.policy_id)
        if pointer is not None:
            learner = await self.continue_line(spec, index, config, pointer)
        else:
            learner = ArmLearner.fresh(spec, index, config)
            log.info("%s/%s: new line %s", spec.run_id, arm.arm_id, arm.policy_id)
        await self.store.put(checkpoint_object(spec.run_id, arm.arm_id), learner.checkpoint())
        if pointer is None:
            await self.publish(spec, learner, learner.policy_blob(), None)
        return learner

    async def continue_line(
        self, spec: RunSpec, index: int, config: LearnerConfig, pointer: ActivePolicy
    ) -> ArmLearner:
        """A learner that trains the line on from the version `pointer` names: from the checkpoint that produced it
        (optimiser and normalisers too) when the pointer names one that is still stored, else from its weights."""
        arm = spec.arms[index]
        checkpoint = await fetch_object(self.store, pointer.checkpoint) if pointer.checkpoint else None
        if checkpoint is not None:
            try:
                learner = await asyncio.to_thread(
                    ArmLearner.continue_line, spec, index, config, checkpoint, pointer.version
                )
            except PolicyBlobError as exc:
                log.warning(
                    "%s: checkpoint %s not usable (%s); continuing from weights", arm.policy_id, pointer.checkpoint, exc
                )
            else:
                log.info(
                    "%s/%s: continues line %s from v%d (checkpoint %s)",
                    spec.run_id,
                    arm.arm_id,
                    arm.policy_id,
                    pointer.version,
                    pointer.checkpoint,
                )
                return learner
        blob = await fetch_object(self.store, pointer.object_name)
        try:
            weights = decode_policy(blob or b"", expected_sha256=pointer.sha256)
        except PolicyBlobError as exc:
            raise ValueError(f"line {arm.policy_id} v{pointer.version} cannot be trained on: {exc}") from exc
        log.info("%s/%s: continues line %s from v%d (weights)", spec.run_id, arm.arm_id, arm.policy_id, pointer.version)
        return ArmLearner(spec, index, config, weights.network, weights.normalizer, base_version=pointer.version)

    async def commit(self, spec: RunSpec, learner: ArmLearner, update: RoundUpdate) -> None:
        """Make an applied update durable and point the line at it (the caller acks the round afterwards)."""
        event = ppo_event(learner, update)
        checkpoint = await asyncio.to_thread(learner.checkpoint, msgspec.json.encode(event).decode())
        await self.store.put(checkpoint_object(spec.run_id, learner.arm.arm_id), checkpoint)
        await self.publish(spec, learner, update.blob, event)

    async def publish(self, spec: RunSpec, learner: ArmLearner, blob: bytes, update: PPOUpdateCompleted | None) -> None:
        """Blob, then telemetry with ids that make a replay a no-op, then the pointer Tamiyo and Tolaria follow."""
        pointer = await put_weights(self.store, learner.policy_id, learner.version, blob)
        payloads: list[PPOUpdateCompleted | PolicyUpdated] = [] if update is None else [update]
        payloads.append(PolicyUpdated(policy_id=learner.policy_id, version=learner.version, sha256=pointer.sha256))
        for payload in payloads:
            kind = type(payload).__struct_config__.tag
            event = self.telemetry.event(spec.run_id, payload)
            event_id = f"{kind}-{spec.run_id}-{learner.policy_id}-{learner.version}"
            await self.telemetry.publish(msgspec.structs.replace(event, event_id=event_id))
        # The checkpoint written just before holds this version's optimiser and normalisers: a later run continues
        # the line from there (continue_line).
        checkpoint = checkpoint_object(spec.run_id, learner.arm.arm_id)
        await write_pointer(self.policies, msgspec.structs.replace(pointer, checkpoint=checkpoint))
        await self.prune(learner.policy_id, learner.version)

    async def prune(self, policy_id: str, current: int) -> list[int]:
        """Delete the line's blobs older than the newest `keep_versions` (never `current`); never raises.

        At the reference size a version is ~16 MB, so a long run would otherwise fill the weights store. The kept
        window is what `esper policy use LINE --version N` can go back to.
        """
        if self.keep_versions <= 0:
            return []
        try:
            versions = (await stored_versions(self.store, policy_id)).get(policy_id, [])
            newest = sorted({v for v in versions if v <= current} | {current})[-self.keep_versions :]
            doomed = [v for v in versions if v not in newest and v < current]
            for version in doomed:
                await delete_weights(self.store, policy_id, version)
        except Exception as exc:  # the commit is done; a failed clean-up is retried at the next version
            log.warning("%s: could not prune old weight blobs: %s", policy_id, exc)
            return []
        if doomed:
            log.info("%s: pruned weight blobs v%s (keeping %d)", policy_id, doomed, self.keep_versions)
            if self.on_pruned is not None:
                self.on_pruned(len(doomed))
        return doomed
