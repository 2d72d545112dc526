"""Tolaria hosts: injection points, execution vs action order and segment routing (I12 host side)."""

from __future__ import annotations

import pytest
import torch

from leyline_schemas.enums import SurfaceType, Topology
from services.tolaria.hosts import CNNHost, TransformerHost


def _tiny_cnn(**kwargs: int | None) -> CNNHost:
    return CNNHost(**{"base_channels": 4, **kwargs}).eval()  # type: ignore[arg-type]


def test_cnn_injection_specs_follow_reference_layout() -> None:
    host = _tiny_cnn()
    specs = host.injection_specs()
    assert [s.slot_id for s in specs] == ["r0c0", "r0c1", "r0c2", "r1c0", "r1c1", "r1c2"]
    assert [s.order for s in specs] == list(range(6))
    assert [s.channels for s in specs] == [4, 8, 16, 4, 8, 16]
    assert [s.surface for s in specs] == [SurfaceType.PRE_POOL] * 3 + [SurfaceType.POST_POOL] * 3
    assert [s.position for s in specs] == pytest.approx([1 / 6, 3 / 6, 5 / 6, 2 / 6, 4 / 6, 6 / 6])
    assert host.execution_order() == ["r0c0", "r1c0", "r0c1", "r1c1", "r0c2", "r1c2"]
    assert host.topology is Topology.CNN
    assert host.injection_points == {s.slot_id: s.channels for s in specs}


def test_cnn_pool_layers_limit_row_one() -> None:
    assert [s.slot_id for s in _tiny_cnn(pool_layers=1).injection_specs()] == ["r0c0", "r0c1", "r0c2", "r1c0"]
    assert [s.slot_id for s in _tiny_cnn(pool_layers=0).injection_specs()] == ["r0c0", "r0c1", "r0c2"]
    with pytest.raises(ValueError):
        CNNHost(pool_layers=4)


@pytest.mark.parametrize(
    ("in_channels", "size", "kwargs"),
    [
        (3, 32, {}),
        (1, 8, {"base_channels": 16, "n_blocks": 3}),
        (1, 8, {"base_channels": 16, "n_blocks": 2}),
    ],
)
def test_cnn_segment_chain_equals_forward(in_channels: int, size: int, kwargs: dict[str, int]) -> None:
    host = _tiny_cnn(in_channels=in_channels, **kwargs)
    x = torch.randn(2, in_channels, size, size)
    with torch.no_grad():
        full = host(x)
        h, previous = x, None
        for sid in host.execution_order():
            h = host.forward_to_segment(sid, h, previous)
            assert h.shape[1] == host.injection_points[sid]
            previous = sid
        assert previous is not None
        chained = host.forward_from_segment(previous, h)
        skipped = host.forward_from_segment("r0c1", host.forward_to_segment("r0c1", x))
    assert full.shape == (2, 10)
    assert torch.allclose(full, chained, atol=1e-6) and torch.allclose(full, skipped, atol=1e-6)


def test_cnn_routing_backwards_or_in_place_raises() -> None:
    host = _tiny_cnn()
    h = host.forward_to_segment("r0c1", torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError):
        host.forward_to_segment("r1c0", h, from_segment="r0c1")
    with pytest.raises(ValueError):
        host.forward_to_segment("r0c1", h, from_segment="r0c1")
    with pytest.raises(ValueError):
        host.forward_to_segment("r9c9", h)


def test_cnn_is_channels_last() -> None:
    host = _tiny_cnn()
    h = host.forward_to_segment("r0c0", torch.randn(1, 3, 8, 8))
    assert h.is_contiguous(memory_format=torch.channels_last)


def _tiny_transformer() -> TransformerHost:
    return TransformerHost(
        vocab_size=40, n_embd=16, n_head=2, n_layer=3, block_size=12, dropout=0.0, num_segments=3
    ).eval()


def test_transformer_specs_segments_and_tied_head() -> None:
    host = _tiny_transformer()
    specs = host.injection_specs()
    assert [(s.slot_id, s.order, s.channels) for s in specs] == [("r0c0", 0, 16), ("r0c1", 1, 16), ("r0c2", 2, 16)]
    assert [s.position for s in specs] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert host.execution_order() == ["r0c0", "r0c1", "r0c2"]
    assert host.head.weight is host.tok_emb.weight
    with pytest.raises(ValueError):
        TransformerHost(n_layer=4, num_segments=3)


def test_transformer_segment_chain_equals_forward_and_routing_raises() -> None:
    host = _tiny_transformer()
    idx = torch.randint(0, 40, (2, 7))
    with torch.no_grad():
        full = host(idx)
        h = host.forward_to_segment("r0c0", idx)
        h = host.forward_to_segment("r0c2", h, from_segment="r0c0")
        chained = host.forward_from_segment("r0c2", h)
    assert full.shape == (2, 7, 40)
    assert torch.allclose(full, chained, atol=1e-6)
    with pytest.raises(ValueError):
        host.forward_to_segment("r0c0", h, from_segment="r0c1")
    with pytest.raises(ValueError):
        host.forward_to_segment("r0c1", h, from_segment="r0c1")
    with pytest.raises(ValueError, match="block_size"):
        host(torch.zeros(1, 13, dtype=torch.long))


def _sublayer_transformer() -> TransformerHost:
    torch.manual_seed(0)
    return TransformerHost(
        vocab_size=40, n_embd=16, n_head=2, n_layer=3, block_size=12, dropout=0.0, num_segments=3, surfaces="sublayer"
    ).eval()


def test_sublayer_surfaces_put_post_attn_and_post_mlp_in_every_layer_in_order() -> None:
    """Track A1: slot r0c{k} with order k = 2·layer + rank, POST_ATTN at even k and POST_MLP at odd k."""
    host = _sublayer_transformer()
    specs = host.injection_specs()
    assert [(s.slot_id, s.order) for s in specs] == [(f"r0c{k}", k) for k in range(6)]
    assert [s.surface for s in specs] == [SurfaceType.POST_ATTN, SurfaceType.POST_MLP] * 3
    assert [s.position for s in specs] == pytest.approx([(k + 1) / 6 for k in range(6)])
    assert host.execution_order() == [f"r0c{k}" for k in range(6)]
    assert set(host.injection_points.values()) == {16}


def test_sublayer_boundaries_sit_after_the_half_they_name() -> None:
    host = _sublayer_transformer()
    idx = torch.randint(0, 40, (2, 7))
    with torch.no_grad():
        x = host._embed(idx)
        after_attn = host.layers[0].attend(x)
        after_mlp = host.layers[0].feed_forward(after_attn)
        assert torch.equal(host.forward_to_segment("r0c0", idx), after_attn)
        assert torch.equal(host.forward_to_segment("r0c1", idx), after_mlp)
        layer_1_attn = host.layers[1].attend(after_mlp)
        assert torch.equal(host.forward_to_segment("r0c2", after_mlp, from_segment="r0c1"), layer_1_attn)
        # POST_ATTN output differs from the layer's full output: the surface is inside the block, not at its end.
        assert not torch.allclose(after_attn, after_mlp)


def test_sublayer_host_chains_every_boundary_to_the_plain_forward_and_matches_the_block_end_host() -> None:
    sub = _sublayer_transformer()
    torch.manual_seed(0)
    plain = TransformerHost(vocab_size=40, n_embd=16, n_head=2, n_layer=3, block_size=12, dropout=0.0).eval()
    plain.load_state_dict(sub.state_dict())  # same parameters: the surfaces change where slots sit, not the net
    idx = torch.randint(0, 40, (2, 7))
    with torch.no_grad():
        h = sub.forward_to_segment("r0c0", idx)
        for prev, nxt in zip(sub.execution_order(), sub.execution_order()[1:], strict=False):
            h = sub.forward_to_segment(nxt, h, from_segment=prev)
        chained = sub.forward_from_segment("r0c5", h)
        assert torch.allclose(sub(idx), chained, atol=1e-6)
        assert torch.equal(sub(idx), plain(idx))
        assert torch.equal(sub.forward_to_segment("r0c3", idx), plain.forward_to_segment("r0c1", idx))
    with pytest.raises(ValueError, match="backwards"):
        sub.forward_to_segment("r0c2", h, from_segment="r0c3")


def test_surface_options_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown surfaces"):
        TransformerHost(n_layer=3, num_segments=3, surfaces="post_attn")
    with pytest.raises(ValueError, match="must be n_layer"):
        TransformerHost(n_layer=6, num_segments=3, surfaces="sublayer")
