"""Every layer kind's Swagger examples (LayerSpec.examples, shown in /docs): each one runs as it is, and
the two backends agree on it (asked for by the example, or else by the test)."""

import pytest

from app.layers.registry import LAYERS
from tests.wire import post_layer

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")]


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_swagger_examples_run_and_agree(client, kind):
    examples = LAYERS[kind].examples
    assert examples, f"{kind} has no Swagger example"
    for name, example in examples.items():
        body = post_layer(client, kind, example["value"])
        assert body["kind"] == kind, name
        if not example["value"].get("compare"):
            body = post_layer(client, kind, {**example["value"], "compare": True})
        assert body["comparison"]["allclose"] is True, (name, body["comparison"])
