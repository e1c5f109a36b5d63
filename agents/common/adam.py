"""Adam (and AdamW) for the trainers, built on torch's foreach kernels instead of ``torch.optim``.

Why not ``torch.optim.Adam``: torch 2.13 wraps the optimizers' methods so that its
compiler stays out of them, and the wrapper imports ``torch._dynamo`` the first time
an optimizer is built (and again on every ``step()``). On this 2-core CPU that import
took a one-update run of ``agents.train`` from 3.0 s to 4.0-4.3 s, a quarter of a
seconds-scale run such as RepeatFirst (docs/benchmarks.md, "The optimizer's share of
start-up"). A training run that never compiles has no use for it.

The update is torch.optim.Adam's with amsgrad and maximize off, and with
``weight_decay`` it is torch.optim.AdamW's (decoupled decay; tests/test_adam.py checks
both step for step, bit for bit on the CPU). ``state_dict`` has torch's layout:
checkpoints written with either load into the other. Step counts are Python integers,
so a step reads nothing back from the device.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

# The keys of torch.optim.Adam's param group, with the values this class implements.
_FIXED = dict(amsgrad=False, maximize=False, foreach=None, capturable=False, differentiable=False,
              fused=None)


class Adam:
    """One param group of Adam: ``zero_grad``, ``step``, ``state_dict``, ``load_state_dict``.

    ``weight_decay`` is AdamW's: each step first shrinks the weights by ``lr * weight_decay``."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        params = list(params)
        if not params:
            raise ValueError("Adam got an empty parameter list")
        if not all(isinstance(p, torch.Tensor) for p in params):
            raise TypeError("Adam takes an iterable of tensors (one param group)")
        if lr < 0:
            raise ValueError(f"lr={lr} must be >= 0")
        if eps < 0:
            raise ValueError(f"eps={eps} must be >= 0")
        if not all(0.0 <= b < 1.0 for b in betas) or len(betas) != 2:
            raise ValueError(f"betas={betas} must be two numbers in [0, 1)")
        if weight_decay < 0:
            raise ValueError(f"weight_decay={weight_decay} must be >= 0")
        self.param_groups = [dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, **_FIXED,
                                  decoupled_weight_decay=weight_decay != 0, params=params)]
        # per parameter: the number of steps it took, and its two moment estimates
        self.state: dict[torch.Tensor, dict] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step for every parameter that has a gradient."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = [self._state_of(p) for p in params]
            for s in states:
                s["step"] += 1
            if group["weight_decay"] != 0:
                torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
            grads = [p.grad for p in params]
            exp_avgs = [s["exp_avg"] for s in states]
            exp_avg_sqs = [s["exp_avg_sq"] for s in states]
            beta1, beta2 = group["betas"]
            torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
            torch._foreach_mul_(exp_avg_sqs, beta2)
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
            denom = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_div_(denom, [(1 - beta2 ** s["step"]) ** 0.5 for s in states])
            torch._foreach_add_(denom, group["eps"])
            step_sizes = [-(group["lr"] / (1 - beta1 ** s["step"])) for s in states]
            torch._foreach_addcdiv_(params, exp_avgs, denom, step_sizes)

    def _state_of(self, p: torch.Tensor) -> dict:
        state = self.state.get(p)
        if state is None:
            state = self.state[p] = dict(
                step=0,
                exp_avg=torch.zeros_like(p, memory_format=torch.preserve_format),
                exp_avg_sq=torch.zeros_like(p, memory_format=torch.preserve_format))
        return state

    def state_dict(self) -> dict:
        """torch.optim.Adam's layout: parameters by index, steps as float32 scalars."""
        group = self.param_groups[0]
        index = {p: i for i, p in enumerate(group["params"])}
        state = {index[p]: dict(step=torch.tensor(float(s["step"])), exp_avg=s["exp_avg"],
                                exp_avg_sq=s["exp_avg_sq"])
                 for p, s in self.state.items()}
        packed = {k: v for k, v in group.items() if k != "params"}
        return dict(state=state, param_groups=[dict(packed, params=list(range(len(index))))])

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state dict of this class or of torch.optim.Adam over the same parameters."""
        groups = state_dict["param_groups"]
        params = self.param_groups[0]["params"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(params):
            raise ValueError(
                f"the optimizer state holds {[len(g['params']) for g in groups]} parameters per "
                f"group; this model has one group of {len(params)}: the checkpoint is of another model")
        saved = groups[0]
        unsupported = {k: saved[k] for k in ("amsgrad", "maximize") if saved.get(k)}
        if saved.get("weight_decay") and not saved.get("decoupled_weight_decay"):
            unsupported["weight_decay"] = f"{saved['weight_decay']} (L2, not decoupled)"
        if unsupported:
            raise ValueError(f"the optimizer state was written with {unsupported}; agents.common.adam.Adam "
                             "implements amsgrad=False, maximize=False and AdamW's decoupled decay")
        by_index = dict(zip(saved["params"], params, strict=True))
        state = {}
        for i, s in state_dict["state"].items():
            p = by_index[i]
            if s["exp_avg"].shape != p.shape:
                raise ValueError(f"optimizer state of parameter {i} has shape {tuple(s['exp_avg'].shape)}, "
                                 f"the parameter {tuple(p.shape)}: the checkpoint is of another model")
            # copies: the loaded dict's tensors may still be another optimizer's state
            state[p] = dict(step=int(s["step"]), exp_avg=s["exp_avg"].to(p.device, p.dtype, copy=True),
                            exp_avg_sq=s["exp_avg_sq"].to(p.device, p.dtype, copy=True))
        self.state = state
        group = self.param_groups[0]
        group.update(lr=saved["lr"], betas=tuple(saved["betas"]), eps=saved["eps"],
                     weight_decay=saved.get("weight_decay", 0),
                     decoupled_weight_decay=bool(saved.get("weight_decay")))

    def __repr__(self) -> str:
        g = self.param_groups[0]
        return (f"Adam(lr={g['lr']}, betas={g['betas']}, eps={g['eps']}, weight_decay={g['weight_decay']}, "
                f"params={len(g['params'])})")
