"""The governor's check order, history, snapshots and bit-exact rollback (reference/tolaria_karn.md §4, §11.6–11.7)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from services.tolaria.governor import Governor, GovernorConfig, PanicReason, state_equal


def _fed(values: list[float], config: GovernorConfig | None = None) -> Governor:
    governor = Governor(config)
    for value in values:
        assert governor.check(value).healthy
    return governor


class Host(nn.Module):
    """A host with BatchNorm buffers and a `slots` container, shaped like the morphogenetic model."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
        self.slots = nn.ModuleDict({"r0c0": nn.ModuleDict(), "r0c1": nn.ModuleDict()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _trained_host() -> Host:
    torch.manual_seed(0)
    host = Host()
    host.train()
    host(torch.randn(16, 4))  # moves the BatchNorm running statistics off their defaults
    return host


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_loss_panics_immediately_without_touching_the_counter(bad: float) -> None:
    governor = Governor()
    verdict = governor.check(bad)
    assert verdict.panic and verdict.reason is PanicReason.NAN and verdict.reason == "governor_nan"
    assert governor.history == ()

    diverging = _fed([1.0] * 10)
    assert not diverging.check(100.0).panic
    assert diverging.consecutive_anomalies == 1
    assert diverging.check(bad).reason is PanicReason.NAN
    assert diverging.consecutive_anomalies == 1


def test_lobotomy_only_after_ten_samples() -> None:
    rg = math.log(10)
    governor = _fed([0.5] * 9)
    # With nine samples a loss at ln(10) is merely recorded.
    assert governor.check(rg).healthy
    assert len(governor.history) == 10
    # Now mean(history) < 0.6·ln10 and |loss − ln10| < 0.065·ln10: the model forgot everything.
    verdict = governor.check(rg + 0.1)
    assert verdict.panic and verdict.reason is PanicReason.LOBOTOMY
    assert verdict.loss_at_panic == pytest.approx(rg + 0.1)


def test_lobotomy_needs_a_learned_history() -> None:
    governor = _fed([2.2] * 12)  # never learned: mean is not below 0.6·ln10
    assert governor.check(math.log(10)).healthy


def test_divergence_needs_all_three_thresholds() -> None:
    # Absolute threshold not met (loss < 12) although far above mean + 6σ and 3× mean.
    governor = _fed([1.0] * 10)
    assert governor.check(11.0).healthy
    assert governor.consecutive_anomalies == 0
    # Multiplier not met: mean 5, loss 13 > 12 and > mean + 6σ, but < 3 × mean = 15.
    governor = _fed([5.0] * 10)
    for _ in range(5):
        assert governor.check(13.0).healthy
    assert governor.consecutive_anomalies == 0
    # Statistical threshold not met: a noisy history with σ ≈ 2.
    noisy = [0.5, 4.5] * 5
    governor = _fed(noisy)
    for _ in range(5):
        assert governor.check(13.0).healthy
    assert governor.consecutive_anomalies == 0


def test_divergence_panics_on_the_third_consecutive_anomaly_and_keeps_anomalies_out_of_history() -> None:
    governor = _fed([1.0] * 10)
    first, second = governor.check(50.0), governor.check(60.0)
    assert not first.panic and not second.panic and second.consecutive_anomalies == 2
    assert governor.history == (1.0,) * 10
    third = governor.check(70.0)
    assert third.panic and third.reason is PanicReason.DIVERGENCE
    assert third.loss_at_panic == 70.0 and third.threshold == pytest.approx(1.0)
    assert 50.0 not in governor.history and 70.0 not in governor.history


def test_a_healthy_epoch_resets_the_consecutive_counter() -> None:
    governor = _fed([1.0] * 10)
    governor.check(50.0)
    governor.check(50.0)
    assert governor.check(1.1).healthy
    assert governor.consecutive_anomalies == 0
    assert not governor.check(50.0).panic
    assert not governor.check(50.0).panic
    assert governor.check(50.0).panic


def test_history_is_a_bounded_window() -> None:
    governor = _fed([float(i) / 100 for i in range(30)], GovernorConfig(window=12))
    assert len(governor.history) == 12
    assert governor.history[-1] == pytest.approx(0.29)


@pytest.mark.parametrize("window", [0, 5, 9])
def test_window_below_ten_is_rejected(window: int) -> None:
    with pytest.raises(ValueError, match="window"):
        GovernorConfig(window=window)


def test_reference_defaults_and_random_guess_loss() -> None:
    cfg = GovernorConfig()
    assert (cfg.sensitivity, cfg.multiplier, cfg.absolute_threshold) == (6.0, 3.0, 12.0)
    assert (cfg.window, cfg.min_history, cfg.consecutive, cfg.death_penalty) == (20, 10, 3, 10.0)
    assert cfg.random_guess_loss == pytest.approx(math.log(10))
    assert GovernorConfig.for_classes(50257).random_guess_loss == pytest.approx(math.log(50257))


def test_should_snapshot_every_fifth_epoch_or_after_fossilization_but_not_while_panicking() -> None:
    governor = Governor()
    assert [e for e in range(1, 16) if governor.should_snapshot(e, False)] == [5, 10, 15]
    assert governor.should_snapshot(3, True)
    governor.check(math.nan)
    assert not governor.should_snapshot(5, True)


def test_rollback_restores_host_weights_bit_exactly_after_nan_corruption() -> None:
    host = _trained_host()
    governor = Governor()
    before = {k: v.clone() for k, v in host.state_dict().items()}
    governor.snapshot(host)
    snapshot_tensors = [p for p in host.parameters()]
    with torch.no_grad():
        for param in host.parameters():
            param.fill_(math.nan)
        host.body[1].running_mean.fill_(math.inf)
        host.body[1].num_batches_tracked.fill_(99)
    assert not state_equal(before, host.state_dict())

    verdict = governor.check(math.nan)
    report = governor.rollback(host)
    assert report.reason is PanicReason.NAN and verdict.panic
    assert report.pruned_keys == ()
    assert state_equal(before, host.state_dict())
    # Loaded in place: the optimizer's Parameter objects are still the model's.
    assert all(a is b for a, b in zip(snapshot_tensors, host.parameters(), strict=True))
    # The snapshot survives the load, so a second rollback restores again.
    with torch.no_grad():
        host.body[0].weight.add_(1.0)
    governor.rollback(host)
    assert state_equal(before, host.state_dict())


def test_snapshot_is_a_cpu_copy_independent_of_the_model() -> None:
    host = _trained_host()
    governor = Governor()
    assert governor.snapshot(host) == len(host.state_dict())
    with torch.no_grad():
        host.body[0].weight.zero_()
    governor.rollback(host)
    assert host.body[0].weight.abs().sum() > 0


def test_snapshot_excludes_live_seed_keys_and_rollback_reports_them_for_pruning() -> None:
    host = _trained_host()
    host.slots["r0c0"]["seed"] = nn.Linear(8, 8)  # fossilized: kept in the snapshot
    host.slots["r0c1"]["seed"] = nn.Linear(8, 8)  # live: excluded
    governor = Governor()
    governor.snapshot(host, exclude_prefixes=["slots.r0c1.seed"])
    fossil = host.slots["r0c0"]["seed"].weight.detach().clone()
    with torch.no_grad():
        host.slots["r0c0"]["seed"].weight.fill_(math.nan)
        host.slots["r0c1"]["seed"].weight.fill_(7.0)
    report = governor.rollback(host)
    assert report.pruned_keys == ("slots.r0c1.seed.bias", "slots.r0c1.seed.weight")
    assert torch.equal(host.slots["r0c0"]["seed"].weight, fossil)
    assert torch.all(host.slots["r0c1"]["seed"].weight == 7.0)  # untouched: the caller prunes it


def test_a_missing_host_key_is_a_hard_error() -> None:
    host = _trained_host()
    governor = Governor()
    governor.snapshot(host, exclude_prefixes=["body.3"])
    with pytest.raises(RuntimeError, match=r"body\.3"):
        governor.rollback(host)


def test_a_pruned_seed_after_the_snapshot_is_tolerated() -> None:
    host = _trained_host()
    host.slots["r0c0"]["seed"] = nn.Linear(8, 8)
    governor = Governor()
    governor.snapshot(host)
    del host.slots["r0c0"]["seed"]
    report = governor.rollback(host)
    assert report.restored_keys == len(host.state_dict())


def test_divergence_sequence_triggers_rollback_to_the_last_known_good_weights() -> None:
    host = _trained_host()
    governor = Governor(GovernorConfig(random_guess_loss=math.log(3)))
    good: dict[str, torch.Tensor] = {}
    losses = [1.0 - 0.01 * e for e in range(1, 13)] + [40.0, 45.0, 50.0]
    verdicts = []
    for epoch, loss in enumerate(losses, start=1):
        verdict = governor.check(loss)
        verdicts.append(verdict)
        if verdict.panic:
            break
        if governor.should_snapshot(epoch, fossilized_since_last=False):
            governor.snapshot(host)
            good = {k: v.clone() for k, v in host.state_dict().items()}
        with torch.no_grad():  # this epoch's training moves the weights, blowing up after epoch 12
            for param in host.parameters():
                param.mul_(1.5 if epoch >= 12 else 1.01)
    assert [v.panic for v in verdicts] == [False] * 14 + [True]
    assert verdicts[-1].reason is PanicReason.DIVERGENCE
    report = governor.rollback(host)
    assert report.reason is PanicReason.DIVERGENCE and report.loss_at_panic == 50.0
    assert report.threshold is not None and report.threshold < 12.0
    assert state_equal(good, host.state_dict())
    assert governor.consecutive_anomalies == 0


def test_rollback_without_snapshot_and_reset_semantics() -> None:
    host = _trained_host()
    governor = _fed([1.0] * 10)
    with pytest.raises(RuntimeError, match="snapshot"):
        governor.rollback(host)
    governor.snapshot(host)
    governor.check(50.0)
    governor.reset()
    assert governor.history == () and governor.consecutive_anomalies == 0 and not governor.has_snapshot


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_snapshot_round_trips_and_refuses_a_side_stream() -> None:
    host = _trained_host().cuda()
    governor = Governor()
    governor.snapshot(host)
    before = {k: v.detach().cpu().clone() for k, v in host.state_dict().items()}
    with torch.no_grad():
        host.body[0].weight.fill_(math.nan)
    governor.rollback(host)
    assert state_equal(before, host.state_dict())
    with torch.cuda.stream(torch.cuda.Stream()), pytest.raises(RuntimeError, match="default CUDA stream"):
        governor.snapshot(host)
