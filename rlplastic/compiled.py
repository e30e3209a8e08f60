"""``torch.compile`` for an agent's network forwards, with the plasticity hooks kept working.

An agent that offers ``compile=true`` keeps one :class:`CompiledForwards` and calls its networks through
it inside ``update``; acting, probes and ReDo statistics stay eager. Two things make this more than
``torch.compile(module)``:

* Dynamo ignores forward hooks added after compiling unless its hook guards are on; the monitor's and
  the interventions' hooks come and go, so they are switched on for these calls (a new hook, or a
  swapped submodule, recompiles).
* On CUDA the ``reduce-overhead`` mode (CUDA graphs) is used only for modules without hooks: the
  monitor's hooks update device counters that must outlive the call, which CUDA-graph memory
  (overwritten by the next replay) cannot hold. Modules with hooks get the default mode.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["CompiledForwards", "compile_unavailable_reason"]


def compile_unavailable_reason(device: str | torch.device) -> str | None:
    """Why ``torch.compile`` (Inductor) cannot run on ``device`` here, or ``None`` when it can.

    Inductor writes C++ (CPU) or Triton (CUDA) kernels and builds them with a host compiler; a
    missing compiler would otherwise surface as a long traceback at the first update.
    """
    device = torch.device(device)
    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile (TorchDynamo) does not support this Python version"
    if device.type == "cpu":
        candidates = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
        if not any(c and shutil.which(c) for c in candidates):
            return "no C++ compiler found (g++, c++, clang++ or $CXX) for Inductor's CPU kernels; install g++"
    elif device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "Triton is not installed (it ships with the CUDA build of torch), so Inductor has no GPU backend"
        candidates = [os.environ.get("CC", ""), "cc", "gcc", "clang"]
        if not any(c and shutil.which(c) for c in candidates):
            return "no C compiler found (cc, gcc, clang or $CC) for Triton's kernel launchers; install gcc"
    else:
        return f"compile is supported on cpu and cuda devices, not {device.type!r}"
    return None


def _has_hooks(module: nn.Module) -> bool:
    """Whether ``module`` or any submodule has a forward (pre-)hook."""
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


class CompiledForwards:
    """Compiled callables by name, recompiled when the module behind a name changes.

    Args:
        device: the agent's device: ``reduce-overhead`` (CUDA graphs) on CUDA, ``default`` elsewhere.

    Raises:
        ValueError: when ``torch.compile`` cannot run on ``device`` (the reason is in the message).
    """

    def __init__(self, device: str | torch.device) -> None:
        reason = compile_unavailable_reason(device)
        if reason is not None:
            raise ValueError(f"compile=true cannot run here: {reason}")
        self.mode = "reduce-overhead" if torch.device(device).type == "cuda" else "default"
        #: name → (the module it was compiled for, its mode, the compiled callable)
        self.cache: dict[str, tuple[nn.Module, str, Callable[..., Any]]] = {}

    def step_begin(self) -> None:
        """Mark a new training iteration (CUDA graphs may then reuse the previous outputs' memory)."""
        if self.mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()

    def call(self, name: str, module: nn.Module, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """``fn(*args)`` compiled, where ``fn`` is ``module`` or one of its methods."""
        mode = "default" if self.mode == "reduce-overhead" and _has_hooks(module) else self.mode
        cached = self.cache.get(name)
        if cached is None or cached[0] is not module or cached[1] != mode:
            cached = (module, mode, torch.compile(fn, mode=mode))
            self.cache[name] = cached
        with torch._dynamo.config.patch(skip_nnmodule_hook_guards=False):
            return cached[2](*args)
