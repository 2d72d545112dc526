"""Nothing on the bus path unpickles: no pickle-family import and no unsafe torch/numpy load anywhere in the
services, and policy weights load only as safetensors whose sha256 matches the pointer."""

from __future__ import annotations

import ast
import io
import pickle
from pathlib import Path

import pytest
import torch

from services.policy.network import FactoredRecurrentActorCritic, NetworkConfig
from services.policy.normalization import ObservationNormalizer
from services.policy.weights import PolicyBlobError, decode_policy, encode_policy, sha256_hex

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("services", "leyline_schemas")
#: Modules whose only purpose is (de)serialising arbitrary Python objects.
PICKLE_FAMILY = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal", "copyreg"}


def _unsafe_uses(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names if a.name.split(".")[0] in PICKLE_FAMILY]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_FAMILY:
            found.append((node.lineno, f"from {node.module} import ..."))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
            owner = ast.unparse(node.func.value)
            keywords = {k.arg: k.value for k in node.keywords}
            weights_only = keywords.get("weights_only")
            if owner == "torch" and not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append((node.lineno, "torch.load without weights_only=True"))
            allow_pickle = keywords.get("allow_pickle")
            if owner in ("np", "numpy") and not (isinstance(allow_pickle, ast.Constant) and not allow_pickle.value):
                found.append((node.lineno, f"{owner}.load without allow_pickle=False"))
    return found


def test_no_code_path_can_unpickle() -> None:
    offenders = []
    for package in SCANNED:
        for path in sorted((REPO / package).rglob("*.py")):
            for line, what in _unsafe_uses(ast.parse(path.read_text(), str(path))):
                offenders.append(f"{path.relative_to(REPO)}:{line}: {what}")
    assert not offenders, "\n".join(offenders)


def test_the_scan_sees_what_it_forbids() -> None:
    sample = "import pickle\nfrom dill import loads\nimport torch\ntorch.load(f)\ntorch.load(f, weights_only=True)\n"
    assert [what for _, what in _unsafe_uses(ast.parse(sample))] == [
        "import pickle",
        "from dill import ...",
        "torch.load without weights_only=True",
    ]


@pytest.fixture(scope="module")
def policy_blob() -> bytes:
    config = NetworkConfig(num_slots=3, hidden=16, head_hidden=8)
    network = FactoredRecurrentActorCritic(config)
    return encode_policy(network, ObservationNormalizer(config.obs_size), policy_id="ppo-test", version=3)


def test_weights_load_only_with_the_pointer_digest(policy_blob: bytes) -> None:
    loaded = decode_policy(policy_blob, expected_sha256=sha256_hex(policy_blob))
    assert (loaded.policy_id, loaded.version) == ("ppo-test", 3)
    tampered = policy_blob[:-1] + bytes([policy_blob[-1] ^ 1])
    with pytest.raises(PolicyBlobError, match="sha256 mismatch"):
        decode_policy(tampered, expected_sha256=sha256_hex(policy_blob))


class _Payload:
    """Unpickling this would create a file: proof that the loader never ran pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_pickled_weights_are_refused_without_being_unpickled(tmp_path: Path) -> None:
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Payload(proof))).close()
    assert proof.exists(), "the payload must act when unpickled, or this test proves nothing"
    marker = tmp_path / "marker"
    malicious = pickle.dumps(_Payload(marker))
    buffer = io.BytesIO()
    torch.save({"net.weight": torch.zeros(2)}, buffer)
    for blob in (malicious, buffer.getvalue()):
        with pytest.raises(PolicyBlobError):
            decode_policy(blob, expected_sha256=sha256_hex(blob))
    assert not marker.exists()
