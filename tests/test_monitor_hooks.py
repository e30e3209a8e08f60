"""ActivationCapture and FAU against direct counts."""

import pytest
import torch
from torch import nn

from rlplastic.monitor import ActivationCapture, fau, relu_layers
from rlplastic.monitor.fau_accounts import FAUAccounts


def _hand_net() -> nn.Sequential:
    """2 -> 3 -> ReLU -> 2 -> ReLU with hand-set weights, so signs are known by hand."""
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        net[0].bias.zero_()
        net[2].weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [-1.0, 0.0, 0.0]]))
        net[2].bias.copy_(torch.tensor([0.0, 0.5]))
    return net


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(inplace=True), nn.Linear(16, 1))


def test_relu_layers_finds_qualified_names():
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Sequential(nn.Tanh(), nn.ReLU()))
    found = relu_layers(net)
    assert list(found) == ["1", "2.1"]
    assert all(isinstance(m, nn.ReLU) for m in found.values())


def test_activation_layers_count_activations_whose_output_is_positive_where_their_input_is():
    from rlplastic.monitor import activation_layers

    net = nn.Sequential(
        nn.Linear(2, 2), nn.GELU(), nn.LeakyReLU(0.01), nn.ELU(), nn.SiLU(), nn.Tanh(), nn.Sigmoid(),
        nn.Softplus(), nn.LeakyReLU(-0.5), nn.Sequential(nn.ReLU()),
    )  # fmt: skip
    assert list(activation_layers(net)) == ["1", "2", "3", "4", "9.0"]  # not the negative-slope LeakyReLU at 8
    assert list(relu_layers(net)) == ["9.0"]


def test_fau_hand_built_network_equals_direct_count():
    net = _hand_net()
    x = torch.tensor([[1.0, 2.0], [-1.0, 3.0], [0.0, 0.0]])
    # layer 1 pre-activations: [1,2,-3], [-1,3,-2], [0,0,0] -> positives 2 + 1 + 0 = 3 of 9
    # layer 2 inputs h1 = [1,2,0], [0,3,0], [0,0,0]; pre-acts [3,-0.5], [3,0.5], [0,0.5]
    #   -> positives 1 + 2 + 1 = 4 of 6 (0 is not active: strictly > 0)
    with ActivationCapture(relu_layers(net)) as cap, cap.recording():
        net(x)
    counts = {name: (int(positive), int(total)) for name, (positive, total) in cap.counts().items()}
    assert counts == {"1": (3, 9), "3": (4, 6)}
    accounts = FAUAccounts()  # pooled as the monitor does: Σ positives / Σ elements over layers
    accounts.open({"m": ["1", "3"]}, torch.device("cpu"))
    accounts.count_update()
    accounts.fold({"m": cap})
    accounts.close_window()
    pooled = float(accounts.values("last_window", "fau")["m/fau"])
    assert pooled == pytest.approx((3 + 4) / (9 + 6))
    mean_of_fractions = (3 / 9 + 4 / 6) / 2
    assert abs(pooled - mean_of_fractions) > 0.03  # the two definitions differ here


def test_fau_of_one_activation_counts_every_element():
    a = torch.tensor([[1.0, -1.0, 0.0]])  # 1 of 3 active
    assert fau(a).item() == pytest.approx(1 / 3)
    conv = torch.randn(2, 3, 4, 5)
    assert fau(conv).item() == pytest.approx((conv > 0).sum().item() / conv.numel())


def test_hooks_leave_outputs_unchanged():
    net = _mlp()
    x = torch.randn(8, 4)
    reference = net(x.clone())
    cap = ActivationCapture(relu_layers(net), count=True, keep=True)
    with cap.recording():
        recorded = net(x.clone())
    idle = net(x.clone())
    cap.remove()
    removed = net(x.clone())
    for out in (recorded, idle, removed):
        assert torch.equal(out, reference)


def test_streaming_counts_equal_count_over_concatenation():
    net = _mlp()
    batches = [torch.randn(5, 4), torch.randn(7, 4), torch.randn(3, 4)]

    # independent count: keep the activations of the concatenation and count them directly
    keeper = ActivationCapture(relu_layers(net), count=False, keep=True)
    with keeper.recording():
        net(torch.cat(batches))
    keeper.remove()
    direct = {name: int((a > 0).sum()) for name, a in keeper.activations.items()}
    totals = {name: a.numel() for name, a in keeper.activations.items()}

    cap = ActivationCapture(relu_layers(net))
    with cap.recording():
        for x in batches:
            net(x)
    cap.remove()
    assert set(cap.counts()) == set(direct)
    for name, (pos, tot) in cap.counts().items():
        assert pos.dtype == torch.int64
        assert pos.item() == direct[name]
        assert tot.item() == totals[name]
    positive = sum(int(p) for p, _ in cap.counts().values())
    assert positive == sum(direct.values())


def test_recording_only_inside_chosen_region():
    net = _mlp()
    x = torch.randn(6, 4)
    cap = ActivationCapture(relu_layers(net), keep=True)
    net(x)  # e.g. the actor-loss forward: not counted
    assert cap.counts() == {}
    with cap.recording():
        net(x)  # the critic-loss forward
    net(torch.randn(50, 4))
    net(torch.randn(50, 4))
    for _, total in cap.counts().values():
        assert total.item() == 6 * 16
    assert all(a.shape == (6, 16) for a in cap.activations.values())
    assert not cap.is_recording
    cap.remove()


def test_keep_stores_last_call_and_survives_inplace():
    net = _mlp()
    x1, x2 = torch.randn(3, 4), torch.randn(5, 4)
    cap = ActivationCapture(relu_layers(net), count=False, keep=True)
    with cap.recording():
        net(x1)
        net(x2)
    cap.remove()
    h1 = torch.relu(net[0](x2))
    assert torch.equal(cap.activations["1"], h1)
    assert torch.equal(cap.activations["3"], torch.relu(net[2](h1)))
    assert not cap.activations["1"].requires_grad


def test_reset_zeroes_in_place_and_nesting_restores_state():
    net = _mlp()
    cap = ActivationCapture(relu_layers(net))
    with cap.recording():
        with cap.recording():
            pass
        assert cap.is_recording
        net(torch.randn(4, 4))
    pos_before = cap.counts()["1"][0]
    cap.reset()
    assert cap.counts()["1"][0] is pos_before and pos_before.item() == 0
    with cap.recording():
        net(torch.randn(2, 4))
    assert cap.counts()["1"][1].item() == 2 * 16
    cap.remove()
    with pytest.raises(RuntimeError), cap.recording():
        pass


def test_bad_layers_raise_value_error():
    with pytest.raises(ValueError, match="non-empty"):
        ActivationCapture({})
    with pytest.raises(ValueError, match="count and keep"):
        ActivationCapture({"r": nn.ReLU()}, count=False, keep=False)
    with pytest.raises(ValueError, match="int"):
        ActivationCapture({"r": 3})  # type: ignore[dict-item]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to detect host syncs")
def test_recorded_forward_does_not_sync_on_cuda():
    from rlplastic.monitor import dormant_ratio_over_layers, effective_rank, srank

    net = _mlp().cuda()
    x = torch.randn(32, 4, device="cuda")
    cap = ActivationCapture(relu_layers(net), keep=True)
    accounts = FAUAccounts()  # the monitor's per-update path: fold the counts into the accounts
    accounts.open({"m": list(cap.layers)}, x.device)
    net(x)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            with cap.recording():
                net(x)
            accounts.count_update()
            accounts.fold({"m": cap})
        accounts.close_window()
        accounts.values("last_window", "fau")
        fau(cap.activations["1"])
        dormant_ratio_over_layers(list(cap.activations.values()), 0.025)
        sv = torch.rand(8, device="cuda")
        srank(sv)
        effective_rank(sv)
        cap.reset()
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_fast_relu_count_equals_the_strict_mask_count():
    from rlplastic.monitor.hooks import _count_positive

    torch.manual_seed(0)
    relu_out = torch.relu(torch.randn(8, 3, 5, 5))
    relu_out[0, 0, 0, :3] = torch.tensor([-0.0, 0.0, 1e-30])  # signed zero and a tiny positive
    expected = int((relu_out > 0).sum())
    assert int(_count_positive(relu_out, nonnegative=True)) == expected
    signed = torch.randn(8, 3, 5, 5)  # not a ReLU output: negatives must not count as -1
    assert int(_count_positive(signed, nonnegative=False)) == int((signed > 0).sum())
    # Past 2**24 units per batch the count stays exact (float32 alone could not count that high).
    big = torch.ones(4, 2**23 + 1)
    assert int(_count_positive(big, nonnegative=True)) == 4 * (2**23 + 1)
