"""Models defined the way a researcher writes them, not the MODA Studio zoo's way: functional ReLUs, one
``nn.ReLU`` called twice, a skip connection. MODA Studio finds their activation points on the traced graph."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SmallNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.conv3, self.bn3 = nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64)
        self.conv4, self.bn4 = nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64)
        self.relu = nn.ReLU()  # called at two places: two activation points
        self.fc1, self.fc2 = nn.Linear(64, 128), nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)  # 14×14
        x = F.max_pool2d(self.relu(self.bn2(self.conv2(x))), 2)  # 7×7
        x = F.max_pool2d(self.relu(self.bn3(self.conv3(x))), 2)  # 3×3
        x = F.relu(x + self.bn4(self.conv4(x)))  # a skip connection
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc2(F.relu(self.fc1(x)))


def make_net(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """The builder MODA Studio calls: ``make_net(num_classes=…, in_channels=…, image_size=…)``."""
    return SmallNet(in_channels, num_classes)


def resnet18(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """torchvision's ResNet-18 with a stem for small images (needs torchvision)."""
    import torchvision

    model = torchvision.models.resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
    return model
