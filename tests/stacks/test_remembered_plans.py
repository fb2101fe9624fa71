"""Remembered plans (app.stacks.plan.REMEMBERED_PLANS): a repeated config skips parsing and shape
arithmetic, never the checks of the request's own tensors and options, and a changed config or
limit gets its own plan. Through the real app, against torch."""

import numpy as np
import pytest
import torch

from app.config import Settings
from app.stacks.plan import REMEMBERED_PLANS, StackRequest, LayerRequest, configs_key, plan_stack

WEIGHT = [[0.5, -1.0, 0.25, 2.0], [1.0, 0.0, -0.5, 0.75]]
BIAS = [0.1, -0.2]
INPUT = [[1.0, 2.0, 3.0, 4.0], [-1.0, 0.5, 0.0, 2.0]]


def linear(client, config, x=INPUT, **fields):
    body = {"config": config, "input": x, **fields}
    return client.post("/v1/layers/linear", json=body)


def test_a_changed_config_gets_its_own_plan(client):
    """The same in_features, another out_features, bias: each answer is torch's for its own config."""
    parameters = {"weight": WEIGHT, "bias": BIAS}
    for _ in range(2):  # the second round is served from remembered plans
        first = linear(client, {"in_features": 4, "out_features": 2}, parameters=parameters)
        assert first.status_code == 200
        assert first.json()["output_shape"] == [2, 2] and first.json()["config"]["bias"] is True
        expected = torch.nn.functional.linear(torch.tensor(INPUT), torch.tensor(WEIGHT), torch.tensor(BIAS))
        np.testing.assert_array_equal(np.array(first.json()["output"]["data"], np.float32), expected.numpy())
        other = linear(client, {"in_features": 4, "out_features": 1, "bias": False}, parameters={"weight": WEIGHT[:1]})
        assert other.status_code == 200
        assert other.json()["output_shape"] == [2, 1] and other.json()["config"]["bias"] is False
        assert other.json()["parameters"].keys() == {"weight"}
        expected = torch.nn.functional.linear(torch.tensor(INPUT), torch.tensor(WEIGHT[:1]))
        np.testing.assert_array_equal(np.array(other.json()["output"]["data"], np.float32), expected.numpy())


def test_another_input_shape_is_planned_again(client):
    config = {"in_features": 4, "out_features": 2}
    assert linear(client, config).json()["output_shape"] == [2, 2]
    assert linear(client, config, x=[INPUT[0]] * 5).json()["output_shape"] == [5, 2]
    assert linear(client, config, x=INPUT[0]).json()["output_shape"] == [2]
    wrong = linear(client, config, x=[[1.0, 2.0, 3.0]])
    assert wrong.status_code == 422
    assert wrong.json()["field"] == "input" and "in_features is 4" in wrong.json()["detail"]


@pytest.mark.parametrize(
    ("fields", "status", "field"),
    [
        ({"parameters": {"weight": [[1.0, 2.0, 3.0, 4.0]]}}, 422, "parameters.weight"),
        ({"parameters": {"weight": WEIGHT, "bias": [1.0]}}, 422, "parameters.bias"),
        ({"parameters": {"scale": [1.0]}}, 422, "parameters.scale"),
        ({"parameters": {"weight": [[True, 1.0, 1.0, 1.0]] * 2}}, 422, "body"),
        ({"input": [[1.0, 2.0], [3.0]]}, 422, "input"),
        ({"input": [["a", 1.0, 1.0, 1.0]]}, 422, "input"),
        ({"input": {"random": "normal", "shape": [10**9, 4]}}, 413, "input"),
        ({"grad_output": [[1.0]]}, 422, "grad_output"),
        ({"device": "cuda:99"}, 422, "device"),
    ],
)
def test_a_remembered_plan_still_refuses_bad_tensors_and_options(client, fields, status, field):
    """The same answer to a bad request whether its config's plan is remembered or not."""
    config = {"in_features": 4, "out_features": 2}
    body = {"config": config, "input": INPUT, **fields}
    REMEMBERED_PLANS.clear()
    cold = client.post("/v1/layers/linear", json=body)
    assert linear(client, config).status_code == 200  # this config's plan is now remembered
    warm = client.post("/v1/layers/linear", json=body)
    assert warm.status_code == cold.status_code == status, warm.json()
    assert warm.json()["field"] == cold.json()["field"] == field
    assert warm.json()["detail"] == cold.json()["detail"]


def test_limits_are_part_of_what_is_remembered(make_client):
    """A plan remembered under generous limits is not served to an app with tight ones."""
    config = {"in_features": 4, "out_features": 2}
    assert linear(make_client(), config).status_code == 200
    small = linear(make_client(max_parameter_elements=5), config)
    assert small.status_code == 413 and small.json()["limit"] == "max_parameter_elements"
    few = linear(make_client(max_tensor_elements=3), config, x=INPUT[0])
    assert few.status_code == 413 and few.json()["limit"] == "max_tensor_elements"


def test_a_bad_config_is_refused_every_time(client):
    for _ in range(2):
        response = linear(client, {"in_features": 4, "out_features": 0})
        assert response.status_code == 422 and response.json()["field"].startswith("config")


def test_configs_that_json_cannot_tell_apart_are_not_remembered():
    """NaN, infinities and None all write as null; bytes do not write at all: such configs are not keys."""
    def request(config):
        return StackRequest([LayerRequest("linear", config)], INPUT, single=True)

    assert configs_key(request({"in_features": 4, "out_features": 2})) is not None
    assert configs_key(request({"in_features": 4, "out_features": 2})) != configs_key(
        request({"in_features": 4.0, "out_features": 2})
    )
    for value in (float("nan"), float("inf"), None, b"\x01"):
        assert configs_key(request({"in_features": 4, "out_features": value})) is None


def test_the_remembered_plans_are_bounded():
    settings = Settings()
    for out_features in range(1, REMEMBERED_PLANS.entries + 10):
        plan_stack(StackRequest([LayerRequest("linear", {"in_features": 1, "out_features": out_features})],
                                [[1.0]], single=True), settings)
    assert len(REMEMBERED_PLANS._remembered) == REMEMBERED_PLANS.entries
