"""The learned policy: stateless decisions with packed recurrent state, safetensors weights, and pointer loading."""

from __future__ import annotations

import hashlib
import pickle

import msgspec
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save as save_tensors

import leyline_schemas as L
from leyline_schemas.heads import conditioned_masks
from services.observation.features import observation_size
from services.policy.network import FactoredRecurrentActorCritic
from services.policy.normalization import ObservationNormalizer
from services.policy.sampling import evaluate_actions
from services.policy.weights import PolicyBlobError, decode_policy, encode_policy, sha256_hex
from services.tamiyo.learned import LearnedPolicy, PolicyInputError, pack_state, unpack_state
from services.tamiyo.loader import PolicyLoadError, served_policy
from services.tamiyo.policies import PolicyBook, resolve_view
from services.tamiyo.requests import InvalidDecisionRequest, validate_decision_request
from tests.tamiyo.policy_helpers import decision_request, policy_blob, tiny_network


def _policy(seed: int = 0, version: int = 3) -> LearnedPolicy:
    network = tiny_network(seed=seed)
    normalizer = ObservationNormalizer(network.config.obs_size)
    stats = torch.Generator().manual_seed(seed)
    normalizer.update(torch.randn(64, network.config.obs_size, generator=stats) * 2 + 1)
    return LearnedPolicy(network, normalizer, policy_id="line", version=version, value_scale=2.0)


def test_a_decision_carries_version_log_probs_value_and_the_new_state() -> None:
    policy = _policy()
    decision = policy.decide(decision_request("line"))
    assert decision.policy_id == "line" and decision.policy_version == 3
    assert len(decision.policy_state) == 4 * policy.config.state_floats
    assert decision.log_probs.op < 0.0 and decision.log_probs.blueprint <= 0.0
    assert 0.0 <= decision.entropies.op <= 1.0
    # Stateless: the same request always gives the same decision, on any instance.
    assert _policy().decide(decision_request("line")) == decision


def test_empty_state_means_zeros_and_a_wrong_size_names_policy_state() -> None:
    policy = _policy()
    h, c = unpack_state(b"", 1, 16)
    assert float(h.abs().sum() + c.abs().sum()) == 0.0
    zeros = pack_state((torch.zeros(1, 1, 16), torch.zeros(1, 1, 16)))
    assert policy.decide(decision_request("line")) == policy.decide(decision_request("line", policy_state=zeros))
    with pytest.raises(PolicyInputError) as caught:
        policy.decide(decision_request("line", policy_state=b"\x00" * 20))
    assert caught.value.field == "policy_state" and "policy_state" in str(caught.value)
    with pytest.raises(PolicyInputError) as nan:
        policy.decide(decision_request("line", observation=[float("nan")] * 85))
    assert nan.value.field == "observation"


@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=8, max_size=8), st.integers(1, 2))
def test_recurrent_state_bytes_are_the_codecs_float32_both_ways(values: list[float], layers: int) -> None:
    hidden = 4 // layers
    h = torch.tensor(values[: layers * hidden]).view(layers, 1, hidden)
    c = torch.tensor(values[layers * hidden : 2 * layers * hidden]).view(layers, 1, hidden)
    packed = pack_state((h, c))
    assert packed == L.pack_float32(values[: 2 * layers * hidden])
    back_h, back_c = unpack_state(L.pack_float32(values[: 2 * layers * hidden]), layers, hidden)
    assert torch.equal(back_h, h) and torch.equal(back_c, c)
    assert back_h.is_contiguous() and back_c.is_contiguous() and back_h.dtype is torch.float32


def test_rollout_and_full_sequence_log_probs_agree(seed: int = 7) -> None:
    """12.4: single steps with carried hidden vs one unroll from the zero state, same weights and stats."""
    policy = _policy(seed=seed)
    torch.manual_seed(seed)
    state, decisions, requests = b"", [], []
    for epoch in range(1, 13):
        request = decision_request(
            "line", epoch=epoch, policy_state=state, observation=torch.randn(observation_size(2)).tolist()
        )
        decision = policy.decide(request)
        decisions.append(decision)
        requests.append(request)
        state = decision.policy_state
    network = tiny_network(seed=seed)  # the weights `_policy(seed)` was built from
    obs = policy.normalizer.normalize(torch.tensor([r.observation for r in requests])).unsqueeze(0)
    indices = torch.tensor([r.blueprint_indices for r in requests]).unsqueeze(0)
    with torch.no_grad():
        out = network(obs, indices, network.initial_state(1))
    rows = [conditioned_masks(r.masks, int(d.action.op)) for r, d in zip(requests, decisions, strict=True)]
    masks = {h: torch.tensor([[row[h] for row in rows]]) for h in L.HEAD_NAMES}
    actions = {h: torch.tensor([[int(getattr(d.action, h)) for d in decisions]]) for h in L.HEAD_NAMES}
    scored, _ = evaluate_actions(out.logits, masks, actions)
    for head in L.HEAD_NAMES:
        rollout = torch.tensor([getattr(d.log_probs, head) for d in decisions])
        assert torch.allclose(scored[head][0], rollout, atol=1e-5), head
    joint = sum(scored[h][0] for h in L.HEAD_NAMES) - sum(
        torch.tensor([getattr(d.log_probs, h) for d in decisions]) for h in L.HEAD_NAMES
    )
    assert float(torch.as_tensor(joint).abs().max()) < 1e-5


def test_weights_round_trip_through_safetensors_with_the_normalizer() -> None:
    policy = _policy()
    blob = encode_policy(tiny_network(), policy.normalizer, policy_id="line", version=3, value_scale=2.0)
    weights = decode_policy(blob, expected_sha256=sha256_hex(blob))
    assert weights.version == 3 and weights.value_scale == 2.0
    assert torch.equal(weights.normalizer.mean, policy.normalizer.mean) and weights.normalizer.count == 64
    loaded = LearnedPolicy.from_weights(weights, policy_id="line")
    assert loaded.decide(decision_request("line")) == policy.decide(decision_request("line"))


def test_bad_blobs_are_refused_without_unpickling() -> None:
    blob = policy_blob("line", 0)
    with pytest.raises(PolicyBlobError, match="sha256 mismatch"):
        decode_policy(blob, expected_sha256="0" * 64)
    with pytest.raises(PolicyBlobError, match="safetensors"):
        decode_policy(pickle.dumps({"weights": [1.0, 2.0]}))
    network: FactoredRecurrentActorCritic = tiny_network()
    partial = {f"net.{k}": v.contiguous() for k, v in list(network.state_dict().items())[:-1]}
    stats = ObservationNormalizer(network.config.obs_size).tensors()
    metadata = dict(
        format="esper.tamiyo.policy/1",
        network='{"num_slots": 2, "hidden": 16, "head_hidden": 8, "lstm_layers": 1}',
        value_head_schema="2",
        version="0",
    )
    with pytest.raises(PolicyBlobError, match="layout"):
        decode_policy(save_tensors({**partial, **stats}, metadata=metadata))
    with pytest.raises(PolicyBlobError, match="value head schema"):
        decode_policy(save_tensors({**partial, **stats}, metadata={**metadata, "value_head_schema": "1"}))


def test_pointers_load_only_matching_blobs() -> None:
    blob = policy_blob("line", 4)
    good = L.ActivePolicy(policy_id="line", kind=L.PolicyKind.LEARNED, version=4, sha256=sha256_hex(blob))
    served = served_policy(good, blob)
    assert served.version == 4 and served.decide(decision_request("line")).policy_version == 4
    for bad, why in (
        (msgspec.structs.replace(good, sha256=hashlib.sha256(b"other").hexdigest()), "sha256 mismatch"),
        (msgspec.structs.replace(good, version=5), "holds version 4"),
        (msgspec.structs.replace(good, sha256=""), "no sha256"),
    ):
        with pytest.raises(PolicyLoadError, match=why):
            served_policy(bad, blob)
    with pytest.raises(PolicyLoadError, match="missing"):
        served_policy(good, None)
    alias = served_policy(L.ActivePolicy(policy_id="baseline", kind=L.PolicyKind.HEURISTIC))
    assert alias.decide(decision_request("baseline")).reason


def test_book_serves_several_lines_and_greedy_views() -> None:
    book = PolicyBook()
    blob = policy_blob("line", 1)
    active = L.ActivePolicy(policy_id="line", kind=L.PolicyKind.LEARNED, version=1, sha256=sha256_hex(blob))
    book.add(served_policy(active, blob))
    assert {"heuristic", "random", "wait", "line"} <= set(book.ids())
    view = resolve_view(decision_request("line+greedy"))
    assert view.policy_id == "line" and view.deterministic
    greedy = [book.get("line").decide(view) for _ in range(2)]
    assert greedy[0] == greedy[1]
    book.remove("line")
    assert "line" not in book.ids()
    book.remove("heuristic")
    assert book.get("heuristic").kind is L.PolicyKind.HEURISTIC


def test_requests_with_out_of_range_blueprint_indices_are_refused() -> None:
    validate_decision_request(msgspec.structs.replace(decision_request("line"), blueprint_indices=[-1, 13]))
    request = msgspec.structs.replace(decision_request("line"), blueprint_indices=[-1, 14])
    with pytest.raises(InvalidDecisionRequest) as caught:
        validate_decision_request(request)
    assert caught.value.field == "blueprint_indices[1]"


def test_requests_of_the_old_widths_are_refused() -> None:
    """Invariant 20 of plans/kasmina2-phase0.md: 25 + 32·S features and 8 op rows, not 23 + 31·S and 6."""
    request = decision_request("line", num_slots=2)
    assert len(request.observation) == 25 + 32 * 2 and len(request.masks.slot_by_op) == 8
    validate_decision_request(request)
    old_width = msgspec.structs.replace(request, observation=[0.1] * (23 + 31 * 2))
    with pytest.raises(InvalidDecisionRequest) as caught:
        validate_decision_request(old_width)
    assert caught.value.field == "observation"
    masks = request.masks
    old_masks = msgspec.structs.replace(masks, op=masks.op[:6], slot_by_op=masks.slot_by_op[:6])
    with pytest.raises(InvalidDecisionRequest) as caught:
        validate_decision_request(msgspec.structs.replace(request, masks=old_masks))
    assert caught.value.field == "masks.op"
    six_rows = msgspec.structs.replace(masks, slot_by_op=masks.slot_by_op[:6])
    with pytest.raises(InvalidDecisionRequest) as caught:
        validate_decision_request(msgspec.structs.replace(request, masks=six_rows))
    assert caught.value.field == "masks.slot_by_op"
