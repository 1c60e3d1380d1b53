"""Switch Brevitas quantization on and off per module, with Brevitas' own ``disable_quant`` flags.

Used by full-precision pre-training (everything off), by SSP (fragments off at random) and by tests.
No module is swapped or copied: a disabled QuantReLU still applies its ReLU, a disabled QuantConv uses
its float weight. :func:`clipped_activations` adds the one thing Brevitas has no switch for: a
full-precision activation clipped at the range its quantizer will start from (written by hand as a
forward hook on each QuantReLU).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from brevitas.nn import QuantReLU
from brevitas.proxy.parameter_quant import WeightQuantProxyFromInjectorBase
from brevitas.proxy.runtime_quant import ActQuantProxyFromInjectorBase
from torch import nn

_PROXIES = (WeightQuantProxyFromInjectorBase, ActQuantProxyFromInjectorBase)


def _proxies(module: nn.Module) -> Iterator[nn.Module]:
    """Every weight and activation quantizer proxy inside ``module``, in module order."""
    return (sub for sub in module.modules() if isinstance(sub, _PROXIES))


def set_precision(module: nn.Module, weights: bool, acts: bool) -> None:
    """Quantize (True) or run full precision (False) every weight / activation quantizer inside ``module``."""
    for proxy in _proxies(module):
        enabled = weights if isinstance(proxy, WeightQuantProxyFromInjectorBase) else acts
        proxy.disable_quant = not enabled


def precision_state(module: nn.Module) -> list[bool]:
    """Which quantizers inside ``module`` are enabled, in module order (for save/restore and tests)."""
    return [not proxy.disable_quant for proxy in _proxies(module)]


@contextmanager
def full_precision(module: nn.Module) -> Iterator[nn.Module]:
    """Run ``module`` with every quantizer off, restoring the previous state afterwards."""
    proxies = list(_proxies(module))
    before = [p.disable_quant for p in proxies]
    for p in proxies:
        p.disable_quant = True
    try:
        yield module
    finally:
        for p, state in zip(proxies, before, strict=True):
            p.disable_quant = state


@contextmanager
def clipped_activations(module: nn.Module, max_val: float) -> Iterator[nn.Module]:
    """Clip every QuantReLU's output at ``max_val`` while the body runs (gradient 0 above the clip, as a
    clipped ReLU): full-precision pre-training then trains the network that quantized fine-tuning starts
    from, whose k-bit activation quantizers start with the range [0, max_val] (``model.act_max_init``)."""
    handles = [sub.register_forward_hook(lambda _m, _i, out: out.clamp(max=max_val))
               for sub in module.modules() if isinstance(sub, QuantReLU)]
    try:
        yield module
    finally:
        for handle in handles:
            handle.remove()
