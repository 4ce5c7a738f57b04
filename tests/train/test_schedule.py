"""Optimiser groups and the warm-up + cosine schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from panst3r_engine.train.schedule import WarmupCosine, make_optimizer, make_scheduler


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 3)
        self.norm = nn.LayerNorm(3)
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)


def test_biases_and_norms_get_no_weight_decay_and_frozen_parameters_are_left_out() -> None:
    net = Net()
    opt = make_optimizer(net, lr=1e-4, weight_decay=0.05)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert [p is net.linear.weight for p in decay["params"]] == [True]
    assert {id(p) for p in no_decay["params"]} == {id(net.linear.bias), id(net.norm.weight), id(net.norm.bias)}
    assert opt.defaults["betas"] == (0.9, 0.95)


def test_warmup_then_half_cosine_to_min_lr() -> None:
    f = WarmupCosine(total=10, warmup=2, min_ratio=0.01)
    assert [f(0), f(1)] == [0.5, 1.0]
    assert f(2) == 1.0
    assert math.isclose(f(6), 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert math.isclose(f(10), 0.01)


def test_scheduler_state_round_trips() -> None:
    net = Net()
    opt = make_optimizer(net, 1e-3, 0.05)
    sched = make_scheduler(opt, total=10, warmup=2, lr=1e-3, min_lr=1e-5)
    for _ in range(3):
        opt.step()
        sched.step()
    other = make_scheduler(make_optimizer(Net(), 1e-3, 0.05), total=10, warmup=2, lr=1e-3, min_lr=1e-5)
    other.load_state_dict(sched.state_dict())
    assert other.last_epoch == 3 and other.get_last_lr() == sched.get_last_lr()
    assert torch.is_tensor(torch.tensor(sched.get_last_lr()))
