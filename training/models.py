"""The pre-activation CNN builder: plain (deployable, no skip connections) or residual (for comparison).

Layer order inside a quantized layer is ``BN -> ReLU -> q -> QConv`` (the paper's pre-activation form).
The network F is::

    raw uint8 image -> stem QuantConv (16-bit W)
      -> blocks: each block is ``convs_per_block`` pre-activation layers; the first conv of a stage
         carries the stage's stride (no max-pool: FINN maps strided convs to RTL)
      -> head: BN -> QuantReLU -> flatten -> QuantLinear (16-bit W) -> logits

There is no input quantizer and no bias anywhere. The input is the raw image as float values 0..255:
no normalisation is needed because a BatchNorm follows the stem before any quantizer (BN makes the
stem's output invariant to the input's scale and mean).

Every layer takes an optional BatchNorm override, so that the auxiliary network H can run F's own conv
chain with H's private BatchNorm layers without copying or swapping modules.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from agq.training.config import ModelConfig, conv_out_size
from agq.training.quant import act_quant, weight_quant
from brevitas.nn import QuantConv2d, QuantLinear, QuantReLU
from torch import nn


def low_bit_weight_quant(cfg: ModelConfig) -> type:
    """The quantizer of every low-bit conv (all but the first conv and the last FC)."""
    return weight_quant(cfg.weight_bits, wide=False, clamp=cfg.weight_clamp, scale=cfg.weight_scale)


class PreActConv(nn.Module):
    """One quantized layer: BN -> QuantReLU (k-bit) -> QuantConv (k-bit narrow weights, no bias)."""

    def __init__(self, cin: int, cout: int, stride: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.act = QuantReLU(act_quant=act_quant(cfg.act_bits, cfg.act_max_init))
        self.conv = QuantConv2d(
            cin, cout, cfg.kernel_size, stride=stride, padding=cfg.kernel_size // 2, bias=False,
            weight_quant=low_bit_weight_quant(cfg),
        )

    def forward(self, x: torch.Tensor, bn: nn.Module | None = None) -> torch.Tensor:
        return self.conv(self.act((bn or self.bn)(x)))


class Block(nn.Module):
    """``convs_per_block`` pre-activation layers; with ``residual`` a ResNet v2 shortcut is added.

    The shortcut is the identity where shapes agree, else a strided 1x1 QuantConv on the block input
    (k-bit weights). Residual networks exist for honest comparisons only: FINN's all-RTL flow used by agq
    has no float Add, so they are not deployable.
    """

    def __init__(self, cin: int, cout: int, stride: int, cfg: ModelConfig, residual: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            PreActConv(cin if i == 0 else cout, cout, stride if i == 0 else 1, cfg)
            for i in range(cfg.convs_per_block)
        )
        self.shortcut: nn.Module | None = None
        if residual:
            self.shortcut = nn.Identity()
            if stride != 1 or cin != cout:
                self.shortcut = QuantConv2d(
                    cin, cout, 1, stride=stride, bias=False,
                    weight_quant=low_bit_weight_quant(cfg),
                )

    def layer_outputs(self, x: torch.Tensor, bns: Sequence[nn.Module] | None = None) -> list[torch.Tensor]:
        """Every conv layer's output; the last one includes the shortcut, i.e. it is the block output."""
        outputs = []
        out = x
        for i, layer in enumerate(self.layers):
            out = layer(out, None if bns is None else bns[i])
            outputs.append(out)
        if self.shortcut is not None:
            outputs[-1] = outputs[-1] + self.shortcut(x)
        return outputs

    def forward(self, x: torch.Tensor, bns: Sequence[nn.Module] | None = None) -> torch.Tensor:
        return self.layer_outputs(x, bns)[-1]


class Head(nn.Module):
    """BN -> QuantReLU -> flatten -> QuantLinear (16-bit weights, no bias): FINN permutes the FC itself."""

    def __init__(self, channels: int, spatial: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.act = QuantReLU(act_quant=act_quant(cfg.act_bits, cfg.act_max_init))
        self.fc = QuantLinear(
            channels * spatial * spatial, cfg.num_classes, bias=False,
            weight_quant=weight_quant(cfg.first_last_bits, wide=True),
        )

    def forward(self, x: torch.Tensor, bn: nn.Module | None = None) -> torch.Tensor:
        return self.fc(torch.flatten(self.act((bn or self.bn)(x)), 1))


class QuantCNN(nn.Module):
    """The network F (plain) or its residual twin, built from per-stage width/depth/stride lists."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem = QuantConv2d(
            cfg.in_channels, cfg.stem_channels, cfg.kernel_size, stride=1,
            padding=cfg.kernel_size // 2, bias=False,
            weight_quant=weight_quant(cfg.first_last_bits, wide=True),
        )
        blocks: list[Block] = []
        cin, size = cfg.stem_channels, cfg.image_size
        for width, depth, stride in zip(cfg.widths, cfg.depths, cfg.strides, strict=True):
            for i in range(depth):
                s = stride if i == 0 else 1
                blocks.append(Block(cin, width, s, cfg, residual=cfg.arch == "residual"))
                size = conv_out_size(size, cfg.kernel_size, s)
                cin = width
        self.blocks = nn.ModuleList(blocks)
        self.head = Head(cin, size, cfg)

    def features(
        self, x: torch.Tensor, bns: Sequence[Sequence[nn.Module]] | None = None
    ) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
        """The stem's output and, per block, every conv layer's output (see :meth:`Block.layer_outputs`),
        optionally with other BatchNorm layers (H's): ``bns[i][j]`` replaces the BN of layer j in block i."""
        stem = out = self.stem(x)
        outputs = []
        for i, block in enumerate(self.blocks):
            layers = block.layer_outputs(out, None if bns is None else bns[i])
            outputs.append(layers)
            out = layers[-1]
        return stem, outputs

    def layer_outputs(
        self, x: torch.Tensor, bns: Sequence[Sequence[nn.Module]] | None = None
    ) -> list[list[torch.Tensor]]:
        """Per block, every conv layer's output (see :meth:`features`)."""
        return self.features(x, bns)[1]

    def block_outputs(
        self, x: torch.Tensor, bns: Sequence[Sequence[nn.Module]] | None = None
    ) -> list[torch.Tensor]:
        """O_1..O_P: every block's output, optionally with other BatchNorm layers (H's)."""
        return [layers[-1] for layers in self.layer_outputs(x, bns)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block_outputs(x)[-1])

    def quant_layers(self) -> Iterator[PreActConv]:
        """Every low-bit layer of F in order (the layerdrop fragments)."""
        for block in self.blocks:
            yield from block.layers


def build_model(cfg: ModelConfig) -> QuantCNN:
    """F (or its residual twin) for a validated model config."""
    return QuantCNN(cfg)
