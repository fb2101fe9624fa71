"""Helpers for the stack tests: the oracle nn.Sequential built straight from the request's layer list.

The oracle never goes through the app's specs: a config's keys are PyTorch's constructor arguments,
so `nn.Conv2d(**config)` is the module the request describes.
"""

import torch
from torch import nn

TORCH_MODULES = {
    "linear": nn.Linear, "relu": nn.ReLU, "flatten": nn.Flatten,
    "conv1d": nn.Conv1d, "conv2d": nn.Conv2d, "conv3d": nn.Conv3d,
    "maxpool1d": nn.MaxPool1d, "maxpool2d": nn.MaxPool2d, "maxpool3d": nn.MaxPool3d,
    "avgpool1d": nn.AvgPool1d, "avgpool2d": nn.AvgPool2d, "avgpool3d": nn.AvgPool3d,
    "batchnorm1d": nn.BatchNorm1d, "batchnorm2d": nn.BatchNorm2d, "batchnorm3d": nn.BatchNorm3d,
}


def torch_module(layer: dict, dtype: torch.dtype = torch.float32) -> nn.Module:
    return TORCH_MODULES[layer["kind"]](**layer.get("config", {})).to(dtype)


def torch_sequential(layers: list[dict], seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """torch.manual_seed(seed) then nn.Sequential(...): what the service's seeded initialization must equal."""
    torch.manual_seed(seed)
    return nn.Sequential(*[torch_module(layer) for layer in layers]).to(dtype)


def documented_stack_route(client, path: str, request_schema: str, examples: dict) -> dict:
    """Check a stack route's OpenAPI entry (operation id, responses, request schema, every example);
    return the whole document for route-specific checks."""
    spec = client.get("/openapi.json").json()
    operation = spec["paths"][path]["post"]
    assert operation["operationId"] == path.rsplit("/", 1)[1]
    assert set(operation["responses"]) >= {"200", "413", "422"}
    content = operation["requestBody"]["content"]["application/json"]
    assert content["schema"] == {"$ref": f"#/components/schemas/{request_schema}"}
    assert set(content["examples"]) == set(examples)  # every example: none dropped for a missing kind
    return spec


# Stacks worth summarizing, each with its input shape.
STACKS = {
    "mlp": ((10, 4), [
        {"kind": "linear", "config": {"in_features": 4, "out_features": 8}},
        {"kind": "relu"},
        {"kind": "linear", "config": {"in_features": 8, "out_features": 1, "bias": False}},
    ]),
    "flatten_mlp": ((6, 3, 2, 5), [
        {"kind": "flatten", "config": {"start_dim": 2}},
        {"kind": "linear", "config": {"in_features": 10, "out_features": 4}},
        {"kind": "relu"},
        {"kind": "flatten"},
        {"kind": "linear", "config": {"in_features": 12, "out_features": 2}},
    ]),
    "batchnorm_mlp": ((8, 3, 10), [
        {"kind": "batchnorm1d", "config": {"num_features": 3, "momentum": None}},
        {"kind": "relu"},
        {"kind": "flatten"},
        {"kind": "linear", "config": {"in_features": 30, "out_features": 6}},
        {"kind": "batchnorm1d", "config": {"num_features": 6, "affine": False}},
        {"kind": "linear", "config": {"in_features": 6, "out_features": 2}},
    ]),
    "notebook_conv": ((100, 3, 120, 160), [
        {"kind": "conv2d", "config": {"in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 2}},
    ]),
    "notebook_maxpool": ((100, 3, 120, 160), [
        {"kind": "maxpool2d", "config": {"kernel_size": [3, 2], "padding": 0, "dilation": 1}},
    ]),
    "notebook_conv_then_pool": ((100, 3, 120, 160), [
        {"kind": "conv2d", "config": {"in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 2}},
        {"kind": "maxpool2d", "config": {"kernel_size": [3, 2]}},
    ]),
    "lenet": ((4, 1, 32, 32), [
        {"kind": "conv2d", "config": {"in_channels": 1, "out_channels": 6, "kernel_size": 5}},
        {"kind": "relu"},
        {"kind": "maxpool2d", "config": {"kernel_size": 2}},
        {"kind": "conv2d", "config": {"in_channels": 6, "out_channels": 16, "kernel_size": 5}},
        {"kind": "relu"},
        {"kind": "maxpool2d", "config": {"kernel_size": 2}},
        {"kind": "flatten"},
        {"kind": "linear", "config": {"in_features": 400, "out_features": 120}},
        {"kind": "relu"},
        {"kind": "linear", "config": {"in_features": 120, "out_features": 84}},
        {"kind": "relu"},
        {"kind": "linear", "config": {"in_features": 84, "out_features": 10}},
    ]),
    "conv1d_stack": ((8, 2, 50), [
        {"kind": "conv1d", "config": {"in_channels": 2, "out_channels": 4, "kernel_size": 3, "padding": 1}},
        {"kind": "batchnorm1d", "config": {"num_features": 4}},
        {"kind": "relu"},
        {"kind": "maxpool1d", "config": {"kernel_size": 3, "stride": 2, "dilation": 2}},
        {"kind": "conv1d", "config": {"in_channels": 4, "out_channels": 6, "kernel_size": 5, "stride": 2,
                                      "dilation": 2, "groups": 2, "bias": False}},
        {"kind": "avgpool1d", "config": {"kernel_size": 2, "ceil_mode": True}},
        {"kind": "flatten"},
        {"kind": "linear", "config": {"in_features": 24, "out_features": 3}},
    ]),
    "conv3d_stack": ((2, 3, 8, 10, 12), [
        {"kind": "conv3d", "config": {"in_channels": 3, "out_channels": 4, "kernel_size": [3, 3, 1],
                                      "padding": "same"}},
        {"kind": "batchnorm3d", "config": {"num_features": 4}},
        {"kind": "relu"},
        {"kind": "maxpool3d", "config": {"kernel_size": 2, "stride": [2, 2, 3]}},
        {"kind": "conv3d", "config": {"in_channels": 4, "out_channels": 2, "kernel_size": 2, "stride": 1,
                                      "dilation": [1, 2, 1]}},
        {"kind": "avgpool3d", "config": {"kernel_size": [1, 2, 2], "padding": [0, 1, 1]}},
        {"kind": "flatten"},
    ]),
    "conv_bn_lenet": ((3, 3, 28, 28), [
        {"kind": "conv2d", "config": {"in_channels": 3, "out_channels": 8, "kernel_size": 3, "padding": 1}},
        {"kind": "batchnorm2d", "config": {"num_features": 8}},
        {"kind": "relu"},
        {"kind": "maxpool2d", "config": {"kernel_size": 2}},
        {"kind": "conv2d", "config": {"in_channels": 8, "out_channels": 8, "kernel_size": 3, "groups": 4,
                                      "padding_mode": "reflect", "padding": 1}},
        {"kind": "batchnorm2d", "config": {"num_features": 8, "affine": False}},
        {"kind": "avgpool2d", "config": {"kernel_size": 3, "stride": 2, "padding": 1}},
        {"kind": "flatten"},
        {"kind": "batchnorm1d", "config": {"num_features": 392}},
        {"kind": "linear", "config": {"in_features": 392, "out_features": 10}},
    ]),
}
