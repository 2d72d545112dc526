"""Subject, stream and bucket names (ARCHITECTURE.md §4). Every subject starts `esper.v1.`."""

from __future__ import annotations

PREFIX = "esper.v1"

KASMINA_STEP = f"{PREFIX}.kasmina.step"
TAMIYO_DECIDE = f"{PREFIX}.tamiyo.decide"
TAMIYO_POLICIES = f"{PREFIX}.tamiyo.policies"
RUNS_START = f"{PREFIX}.runs.start"
RUNS_STOP = f"{PREFIX}.runs.stop"
RUNS_STATUS = f"{PREFIX}.runs.status"
RUNS_RESUME = f"{PREFIX}.runs.resume"

STEPS_STREAM = "STEPS"
STEPS_SUBJECTS = f"{PREFIX}.steps.>"
TELEMETRY_STREAM = "TELEMETRY"
TELEMETRY_SUBJECTS = f"{PREFIX}.telemetry.>"

RUNS_BUCKET = "ESPER_RUNS"
POLICIES_BUCKET = "ESPER_POLICIES"
WEIGHTS_STORE = "ESPER_WEIGHTS"
HOSTS_STORE = "ESPER_HOSTS"

QUEUE_GROUP = "esper"


def _token(value: str) -> str:
    """A NATS subject token: no dots, wildcards or whitespace."""
    if not value or any(ch in value for ch in ".*> \t\r\n"):
        raise ValueError(f"invalid subject token {value!r}")
    return value


def steps_subject(run_id: str) -> str:
    return f"{PREFIX}.steps.{_token(run_id)}"


def telemetry_subject(run_id: str, kind: str) -> str:
    return f"{PREFIX}.telemetry.{_token(run_id)}.{_token(kind)}"


def run_key(run_id: str) -> str:
    return f"run.{_token(run_id)}"


def run_status_key(run_id: str) -> str:
    return f"status.{_token(run_id)}"


def attach_key(run_id: str) -> str:
    return f"attach.{_token(run_id)}"


def lease_key(run_id: str, env_id: int) -> str:
    return f"lease.{_token(run_id)}.{env_id}"


def worker_key(worker_id: str) -> str:
    """A worker's presence key; its id (service-host-pid) may hold a dotted host name, so anything a KV key token
    cannot hold becomes `_`."""
    if not worker_id:
        raise ValueError("empty worker id")
    return "worker." + "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_=") else "_" for ch in worker_id)


def policy_key(policy_id: str) -> str:
    return f"policy.{_token(policy_id)}"


def host_checkpoint_object(run_id: str, env_id: int) -> str:
    """The one host checkpoint an env of a run has at a time, in HOSTS_STORE (services/tolaria/checkpoint_store.py)."""
    return f"hosts/{_token(run_id)}/env-{env_id}.pt"


def weights_object(policy_id: str, version: int) -> str:
    return f"weights/{_token(policy_id)}/{version:06d}.safetensors"
