"""The methods the paper compares AG against (section 3.1.3, Table 3): KD and additional losses.

Both exist for honest comparisons and are training-only: nothing here is part of the deployed F.

* **KD** (Eq. 4, after Zhuang et al. 2018 with the teacher of the same architecture): a separate
  QuantCNN with every quantizer disabled, trained jointly with the student F. Choices:
  the teacher starts as a copy of F at build time, i.e. from F's pre-trained full-precision weights and BN
  statistics (both networks start from the same pre-trained model); the distillation term is one term on
  the logits, ``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` with T = ``kd_temperature``,
  and gradients flow into both networks ("mutually updated", Fig. 2 (b)):
  ``L_kd = CE(teacher) + kd_beta * T^2 * KL``; the objective adds it to CE(F).
* **Additional losses** (Eq. 3): a full-precision head (BN -> ReLU -> global average pool -> linear
  with bias) on the output of every block whose first conv downsamples, as the paper puts them "at the end
  of residual blocks which include downsampling", each weighted by ``aux_alpha`` (0.01).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as tf
from agq.training.models import QuantCNN
from agq.training.precision import set_precision
from brevitas.proxy.parameter_quant import WeightQuantProxyFromInjectorBase
from brevitas.proxy.runtime_quant import ActQuantProxyFromInjectorBase
from torch import nn

from agq.errors import AgqError


class Distillation(nn.Module):
    """The jointly trained full-precision teacher and the KD loss terms it contributes."""

    def __init__(self, model: QuantCNN, temperature: float, beta: float) -> None:
        super().__init__()
        self.temperature = temperature
        self.beta = beta
        self.teacher = copy.deepcopy(model)
        set_precision(self.teacher, weights=False, acts=False)
        for sub in self.teacher.modules():  # its quantizer scales are never used: keep them out of training
            if isinstance(sub, WeightQuantProxyFromInjectorBase | ActQuantProxyFromInjectorBase):
                sub.requires_grad_(False)

    def loss(self, x: torch.Tensor, y: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
        """CE(teacher) + beta * T^2 * KL(teacher || student) on temperature-softened logits."""
        teacher_logits = self.teacher(x)
        t = self.temperature
        kl = tf.kl_div(
            tf.log_softmax(student_logits / t, dim=1), tf.log_softmax(teacher_logits / t, dim=1),
            reduction="batchmean", log_target=True,
        )
        return tf.cross_entropy(teacher_logits, y) + self.beta * t * t * kl


def aux_head(channels: int, num_classes: int) -> nn.Sequential:
    """BN -> ReLU -> global average pool -> linear: a full-precision training-only classifier."""
    return nn.Sequential(
        nn.BatchNorm2d(channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(channels, num_classes),
    )


class AdditionalLosses(nn.Module):
    """CE heads after F's downsampling blocks, weighted by alpha (Eq. 3)."""

    def __init__(self, model: QuantCNN, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha
        self.block_indices = [
            i for i, block in enumerate(model.blocks) if block.layers[0].conv.stride[0] > 1
        ]
        if not self.block_indices:
            raise AgqError("config baseline.aux_losses=true: the model has no downsampling block")
        self.heads = nn.ModuleList(
            aux_head(model.blocks[i].layers[-1].conv.out_channels, model.cfg.num_classes)
            for i in self.block_indices
        )

    def loss(self, block_outputs: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        """alpha * sum of the heads' CE losses on F's block outputs O_1..O_P."""
        return self.alpha * sum(
            tf.cross_entropy(head(block_outputs[i]), y)
            for i, head in zip(self.block_indices, self.heads, strict=True)
        )
