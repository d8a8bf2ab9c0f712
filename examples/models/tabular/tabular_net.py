"""The module of examples/safetensors-model.yaml: it lies in the model directory beside model.safetensors, and the
server imports it from there (`entryPoint: tabular_net:TabularMLP`), constructed with modelserve.json's `init`."""

from __future__ import annotations

import torch


class TabularMLP(torch.nn.Module):
    """Scores rows of tabular features: in_features -> hidden -> hidden -> classes, with ReLU and LayerNorm."""

    def __init__(self, in_features: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(in_features, hidden),
            torch.nn.ReLU(),
            torch.nn.LayerNorm(hidden),
            torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, classes),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(features), dim=1)
