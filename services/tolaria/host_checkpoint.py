"""A host checkpoint: all an env and its epoch loop need to go on from the end of an epoch, as one blob.

Tolaria writes one after every `RunSpec.checkpoint_every` epochs (services/tolaria/checkpoint_store.py keeps it
in the object store). A worker that takes an interrupted episode over restores it into a freshly built env and
trains on bit for bit as the interrupted worker would have, from:

- the model, seeds included (each slot's extra state rebuilds its seed and gate before their weights load);
- the host optimizer and each seed's optimizer (momentum buffers);
- every random stream: torch's (CPU and CUDA), python's, the augmentation generator and the data order;
- the governor with its Last-Known-Good snapshot, the signal tracker, the gradient monitor, the compute ledger;
- the slot states, loss and accuracy histories and episode counters;
- the loop's own progress: policy state, last action and whether it succeeded, and the step records stored so far.

The blob is read with `torch.load(weights_only=True)`: tensors and plain values only, never arbitrary objects.
Anything that does not fit the env it is loaded into raises CheckpointError before the episode goes on.
"""

from __future__ import annotations

import io
import random
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from leyline_schemas import LeylineDecodeError, LifecycleOp, SlotState, StepRecord, decode, encode
from services.tolaria.env import EpisodeCounters, EpisodeEnv
from services.tolaria.signals import SignalTracker

FORMAT = 1


class CheckpointError(ValueError):
    """A host checkpoint that cannot be restored here: unreadable, of another format, or of another episode."""


@dataclass(frozen=True)
class EpisodeKey:
    """Which episode a checkpoint belongs to; a checkpoint restores only into the same one."""

    run_id: str
    env_id: int
    episode: int
    task: str
    seed: int


@dataclass
class EpisodeProgress:
    """The epoch loop's state at the end of `epoch`: what the next StepRequest carries, and the records so far."""

    epoch: int = 0
    policy_state: bytes = b""
    last_op: LifecycleOp = LifecycleOp.WAIT
    last_ok: bool = True
    records: list[StepRecord] = field(default_factory=list)
    attempt: int = 0  # the attempt that stored `records` and wrote the checkpoint


def _cpu(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


def _rng_state(env: EpisodeEnv) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if env.device.type == "cuda" else [],
        "python": random.getstate(),
        "augment": env.augment_generator.get_state(),
        "data_order": env.train_stream.generator.get_state(),
    }


def capture(env: EpisodeEnv, progress: EpisodeProgress, key: EpisodeKey) -> bytes:
    """The checkpoint of `env` after epoch `progress.epoch` (its directive applied), as bytes."""
    payload = {
        "format": FORMAT,
        "key": asdict(key),
        "model": _cpu(env.model.state_dict()),
        "host_optimizer": env.host_optimizer.state_dict(),
        "seed_optimizers": {sid: opt.state_dict() for sid, opt in env.seed_optimizers.items()},
        "rng": _rng_state(env),
        "governor": env.governor.state(),
        "signals": asdict(env.signals),
        "gradients": env.gradients.state(),
        "ledger": env.ledger.state(),
        "env": {
            "slot_states": [encode(s) for s in env.slot_states],
            "loss_history": list(env.loss_history),
            "accuracy_history": list(env.accuracy_history),
            "counters": asdict(env.counters),
            "fossilized_since_snapshot": env.fossilized_since_snapshot,
            "last_accuracy": env.last_accuracy,
        },
        "progress": {
            "epoch": progress.epoch,
            "policy_state": progress.policy_state,
            "last_op": int(progress.last_op),
            "last_ok": progress.last_ok,
            "records": [encode(r) for r in progress.records],
            "attempt": progress.attempt,
        },
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def read_key(blob: bytes) -> tuple[EpisodeKey, int]:
    """The episode a checkpoint belongs to and the epoch it was taken after, without restoring it."""
    payload = _load(blob)
    return _key(payload), int(payload["progress"]["epoch"])


def restore(env: EpisodeEnv, blob: bytes, key: EpisodeKey) -> EpisodeProgress:
    """Load the checkpoint into a freshly built `env` of episode `key`; returns the loop's progress.

    On CheckpointError the env may be half restored: build a fresh one to run the episode from its start.
    """
    payload = _load(blob)
    found = _key(payload)
    if found != key:
        raise CheckpointError(f"the checkpoint is of {found}, not of {key}")
    try:
        env.model.load_state_dict(payload["model"])
        env.host_optimizer.load_state_dict(payload["host_optimizer"])
        env.seed_optimizers.clear()
        for slot_id, state in payload["seed_optimizers"].items():
            optimizer = env.seed_optimizer(slot_id)
            if optimizer is None:
                raise CheckpointError(f"the checkpoint has an optimizer for {slot_id}, whose seed is not active")
            optimizer.load_state_dict(state)
        env.governor.load_state(payload["governor"])
        env.signals = SignalTracker(**payload["signals"])
        env.gradients.load_state(payload["gradients"])
        env.ledger.load_state(payload["ledger"])
        fields = payload["env"]
        env.slot_states = [decode(s, SlotState) for s in fields["slot_states"]]
        env.loss_history = [float(v) for v in fields["loss_history"]]
        env.accuracy_history = [float(v) for v in fields["accuracy_history"]]
        env.counters = EpisodeCounters(**fields["counters"])
        env.fossilized_since_snapshot = bool(fields["fossilized_since_snapshot"])
        env.last_accuracy = float(fields["last_accuracy"])
        progress = payload["progress"]
        restored = EpisodeProgress(
            epoch=int(progress["epoch"]),
            policy_state=bytes(progress["policy_state"]),
            last_op=LifecycleOp(progress["last_op"]),
            last_ok=bool(progress["last_ok"]),
            records=[decode(r, StepRecord) for r in progress["records"]],
            attempt=int(progress["attempt"]),
        )
        # The random streams go last: rebuilding the seeds above drew from torch's.
        _set_rng(env, payload["rng"])
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, LeylineDecodeError) as exc:
        raise CheckpointError(f"the checkpoint does not fit this env: {type(exc).__name__}: {exc}") from exc
    if [r.step for r in restored.records] != list(range(1, restored.epoch + 1)):
        steps = [r.step for r in restored.records]
        raise CheckpointError(f"the checkpoint of epoch {restored.epoch} carries the records of steps {steps}")
    return restored


def _set_rng(env: EpisodeEnv, rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    if env.device.type == "cuda" and rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    env.augment_generator.set_state(rng["augment"])
    env.train_stream.generator.set_state(rng["data_order"])


def _load(blob: bytes) -> dict[str, Any]:
    try:
        # An empty bytes value pickles as a call of `bytes`, which is as safe as the other plain values.
        with torch.serialization.safe_globals([bytes]):
            payload = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to parse these bytes is one verdict: not a checkpoint
        raise CheckpointError(f"unreadable host checkpoint: {type(exc).__name__}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"host checkpoint format {got!r}, expected {FORMAT}")
    return payload


def _key(payload: dict[str, Any]) -> EpisodeKey:
    try:
        return EpisodeKey(**payload["key"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"the checkpoint names no episode: {exc}") from exc
