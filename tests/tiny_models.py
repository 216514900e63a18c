"""Small torch models that stand in for a user's detector in export tests."""

import torch


class TinyDetector(torch.nn.Module):
    """forward(images) -> (predictions [N, cells, 4 + 3], embedding [N, 64])."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 7, kernel_size=8, stride=8)
        self.head = torch.nn.Linear(7, 64)

    def forward(self, images: torch.Tensor):
        features = self.conv(images)
        predictions = torch.sigmoid(features.flatten(2).transpose(1, 2))
        return predictions, self.head(features.mean((2, 3)))


def build() -> TinyDetector:
    torch.manual_seed(0)
    return TinyDetector()


def build_single_output() -> torch.nn.Module:
    return torch.nn.Conv2d(3, 4, 3)
