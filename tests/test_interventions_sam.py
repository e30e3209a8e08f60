"""SAM: closed form on a quadratic, both driving styles, pass-through of state and hooks, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rlplastic.interventions.sam import SAM
from rlplastic.interventions.weight_decay import DecoupledWeightDecay
from tests.factories import ModulesAgent


def quadratic(seed: int = 0, dim: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    a = m @ m.T + torch.eye(dim, dtype=torch.float64)  # SPD
    b = torch.randn(dim, generator=g, dtype=torch.float64)
    theta0 = torch.randn(dim, generator=g, dtype=torch.float64)
    return a, b, theta0


def closed_form(a, b, theta, lr, rho):
    grad = lambda t: a @ t - b  # noqa: E731 - ∇L for L = ½θᵀAθ − bᵀθ
    g = grad(theta)
    return theta - lr * grad(theta + rho * g / g.norm())


@pytest.mark.parametrize("style", ["closure", "two_steps"])
def test_one_step_on_a_quadratic_matches_the_closed_form(style):
    a, b, theta0 = quadratic()
    # two parameter tensors: the ascent uses one global norm over both
    first = nn.Parameter(theta0[:2].clone())
    second = nn.Parameter(theta0[2:].clone())
    sam = SAM([first, second], torch.optim.SGD([first, second], lr=0.1), rho=0.3)

    def loss_fn() -> torch.Tensor:
        theta = torch.cat([first, second])
        return 0.5 * theta @ a @ theta - b @ theta

    def closure() -> torch.Tensor:
        loss = loss_fn()
        loss.backward()
        return loss

    if style == "closure":
        loss = sam.step(closure)
        assert float(loss.detach()) == pytest.approx(float(0.5 * theta0 @ a @ theta0 - b @ theta0))  # loss at θ
    else:
        sam.zero_grad()
        loss_fn().backward()
        norm = sam.first_step()
        torch.testing.assert_close(norm, (a @ theta0 - b).norm())
        loss_fn().backward()
        sam.second_step()
    expected = closed_form(a, b, theta0, lr=0.1, rho=0.3)
    torch.testing.assert_close(torch.cat([first, second]).detach(), expected, rtol=1e-12, atol=1e-12)


def test_several_steps_track_the_closed_form_and_differ_from_sgd():
    a, b, theta0 = quadratic(seed=1)
    theta = nn.Parameter(theta0.clone())
    sam = SAM([theta], torch.optim.SGD([theta], lr=0.05), rho=0.1)
    expected = theta0.clone()
    for _ in range(4):
        sam.step(lambda: (0.5 * theta @ a @ theta - b @ theta).backward())
        expected = closed_form(a, b, expected, lr=0.05, rho=0.1)
    torch.testing.assert_close(theta.detach(), expected, rtol=1e-12, atol=1e-12)
    sgd = theta0 - 0.05 * (a @ theta0 - b)
    assert not torch.allclose(closed_form(a, b, theta0, 0.05, 0.1), sgd)


def test_zero_gradient_is_a_plain_base_step():
    theta = nn.Parameter(torch.ones(3))
    sam = SAM([theta], torch.optim.SGD([theta], lr=0.1), rho=0.05)
    sam.step(lambda: (theta * 0).sum().backward())
    assert torch.equal(theta.detach(), torch.ones(3))


def test_state_and_hooks_are_the_base_optimizers():
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    adam = torch.optim.Adam(model.parameters(), lr=1e-2)
    sam = SAM(model.parameters(), adam, rho=0.05)
    assert sam.param_groups is adam.param_groups and sam.state is adam.state
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    closure = lambda: nn.functional.mse_loss(model(x), y).backward()  # noqa: E731
    sam.step(closure)
    assert sam.state_dict()["state"][0]["step"] == 1  # the base Adam stepped once
    saved = sam.state_dict()

    # a fresh wrapper + base load the base's state; a direct base.load_state_dict is seen too
    other = nn.Linear(3, 1)
    other_adam = torch.optim.Adam(other.parameters(), lr=1e-2)
    other_sam = SAM(other.parameters(), other_adam)
    other_sam.load_state_dict(saved)
    assert other_adam.state_dict()["state"][0]["step"] == 1
    other_adam.load_state_dict(torch.optim.Adam(other.parameters()).state_dict())
    assert other_sam.state is other_adam.state and len(other_sam.state) == 0

    # hooks land on the base step, once per SAM step, with θ restored (decoupled weight decay composes)
    calls = []
    sam.register_step_pre_hook(lambda opt, *_: calls.append(opt))
    DecoupledWeightDecay(ModulesAgent(optimizers={"critic": sam}), targets=["critic"], coef=0.1).install()
    sam.step(closure)
    sam.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    sam.first_step()
    nn.functional.mse_loss(model(x), y).backward()
    sam.second_step()
    assert calls == [adam, adam]


def test_bad_input():
    theta = nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="sam.rho=0 must be a finite number > 0"):
        SAM([theta], torch.optim.SGD([theta], lr=0.1), rho=0)
    with pytest.raises(ValueError, match="base_optimizer must be a torch.optim.Optimizer"):
        SAM([theta], "adam")
    sam = SAM([theta], torch.optim.SGD([theta], lr=0.1))
    with pytest.raises(ValueError, match="needs a closure"):
        sam.step()
    with pytest.raises(RuntimeError, match="second_step without first_step"):
        sam.second_step()
    with pytest.raises(RuntimeError, match="no parameter has a gradient"):
        sam.first_step()
    theta.sum().backward()
    sam.first_step(zero_grad=False)
    with pytest.raises(RuntimeError, match="first_step called twice"):
        sam.first_step()
