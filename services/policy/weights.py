"""Policy weights as safetensors bytes: network weights, observation-normaliser stats and a small config header.

Blobs are never unpickled: the header is parsed as JSON and tensors are read by safetensors alone, and the
sha256 named by the KV pointer is checked BEFORE any of that (ARCHITECTURE.md §7, §9).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from services.policy.network import VALUE_HEAD_SCHEMA, FactoredRecurrentActorCritic, NetworkConfig
from services.policy.normalization import ObservationNormalizer

POLICY_FORMAT = "esper.tamiyo.policy/1"
NETWORK_PREFIX = "net."
MAX_HEADER_BYTES = 16 * 1024 * 1024


class PolicyBlobError(ValueError):
    """Bytes that are not a loadable policy of this format (wrong digest, not safetensors, wrong layout)."""


def sha256_hex(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def safetensors_metadata(blob: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors blob, read from its JSON header without touching the tensors."""
    if len(blob) < 8:
        raise PolicyBlobError(f"{len(blob)} bytes is too short for a safetensors header")
    (header_size,) = struct.unpack("<Q", blob[:8])
    if header_size > min(MAX_HEADER_BYTES, len(blob) - 8):
        raise PolicyBlobError(f"not a safetensors blob: header size {header_size} for {len(blob)} bytes")
    try:
        header = json.loads(blob[8 : 8 + header_size].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PolicyBlobError(f"not a safetensors blob: header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise PolicyBlobError("not a safetensors blob: header is not a JSON object")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise PolicyBlobError("safetensors metadata must map strings to strings")
    return dict(metadata)


def verify_digest(blob: bytes, expected_sha256: str) -> None:
    actual = sha256_hex(blob)
    if actual != expected_sha256.lower():
        raise PolicyBlobError(f"sha256 mismatch: pointer names {expected_sha256}, blob is {actual}")


@dataclass(frozen=True)
class PolicyWeights:
    """A decoded policy: network in eval mode, its observation normaliser and the scale V(s) is reported in."""

    network: FactoredRecurrentActorCritic
    normalizer: ObservationNormalizer
    policy_id: str
    version: int
    value_scale: float = 1.0


def network_tensors(network: FactoredRecurrentActorCritic, prefix: str = NETWORK_PREFIX) -> dict[str, torch.Tensor]:
    return {prefix + name: t.detach().contiguous().clone() for name, t in network.state_dict().items()}


def encode_policy(
    network: FactoredRecurrentActorCritic,
    normalizer: ObservationNormalizer,
    *,
    policy_id: str,
    version: int,
    value_scale: float = 1.0,
) -> bytes:
    """One policy version as safetensors bytes."""
    if normalizer.size != network.config.obs_size:
        raise ValueError(f"normalizer has {normalizer.size} features, the network expects {network.config.obs_size}")
    tensors = {**network_tensors(network), **normalizer.tensors()}
    metadata = {
        "format": POLICY_FORMAT,
        "network": json.dumps(network.config.as_dict(), sort_keys=True),
        "value_head_schema": str(VALUE_HEAD_SCHEMA),
        "policy_id": policy_id,
        "version": str(version),
        "value_scale": repr(float(value_scale)),
    }
    return save_tensors(tensors, metadata=metadata)


def load_network(
    tensors: dict[str, torch.Tensor], config: NetworkConfig, prefix: str = NETWORK_PREFIX
) -> FactoredRecurrentActorCritic:
    """A network of `config` with exactly the weights under `prefix`; a missing or extra tensor is an error."""
    network = FactoredRecurrentActorCritic(config)
    state = {name[len(prefix) :]: t for name, t in tensors.items() if name.startswith(prefix)}
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise PolicyBlobError(f"weights do not fit the network layout: {exc}") from exc
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise PolicyBlobError(f"weight {name} is not finite")
    return network


def decode_policy(blob: bytes, *, expected_sha256: str | None = None) -> PolicyWeights:
    """Verify the digest (when given), then parse the header and tensors; raises PolicyBlobError on anything odd."""
    if expected_sha256 is not None:
        verify_digest(blob, expected_sha256)
    metadata = safetensors_metadata(blob)
    if metadata.get("format") != POLICY_FORMAT:
        raise PolicyBlobError(f"format {metadata.get('format')!r} is not {POLICY_FORMAT}")
    if metadata.get("value_head_schema") != str(VALUE_HEAD_SCHEMA):
        # §4.6: checkpoints carry the value-head schema version and older layouts are refused.
        raise PolicyBlobError(f"value head schema {metadata.get('value_head_schema')!r}, need {VALUE_HEAD_SCHEMA}")
    try:
        config = NetworkConfig.from_dict(json.loads(metadata["network"]))
        version = int(metadata["version"])
        value_scale = float(metadata.get("value_scale", "1.0"))
        tensors = load_tensors(blob)
        normalizer = ObservationNormalizer.from_tensors(tensors)
    except (KeyError, TypeError, ValueError) as exc:
        raise PolicyBlobError(f"malformed policy blob: {exc}") from exc
    except Exception as exc:  # safetensors raises its own error type for a corrupt body
        raise PolicyBlobError(f"malformed safetensors body: {exc}") from exc
    if normalizer.size != config.obs_size:
        raise PolicyBlobError(f"normalizer has {normalizer.size} features, the network expects {config.obs_size}")
    if not math.isfinite(value_scale) or value_scale <= 0:
        raise PolicyBlobError(f"value_scale {value_scale} must be finite and positive")
    network = load_network(tensors, config)
    network.eval()
    return PolicyWeights(
        network=network,
        normalizer=normalizer,
        policy_id=metadata.get("policy_id", ""),
        version=version,
        value_scale=value_scale,
    )
