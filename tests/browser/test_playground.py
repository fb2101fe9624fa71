"""The playground (GET /playground) in a real headless Chromium against a real uvicorn: it loads with no
failed request and no console error; the notebook's stack built through the editor on a generated
image shows 16 feature maps and the right shapes; a wrong in_channels shows the server's message at
that field; a drawn feature map's pixels read back to the API's output; a shared link restores the
view; "copy as" PyTorch, SDK and curl give the API's output; the saliency picture is the input gradient torch
autograd gives. Screenshots: test-artifacts/playground-*.png.

Needs Debian's chromium and chromium-driver (`apt-get install -y chromium chromium-driver`).
"""

import base64
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.live_server import ServerThread

WINDOW_SIZE = "1280,1800"  # for conftest's browser
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
WAIT_SECONDS = 30
HEIGHT, WIDTH, CELL = 40, 52, 6  # a small checkerboard keeps the run and the read-back quick
NOTEBOOK_LAYERS = [
    {"kind": "conv2d", "config": {"in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 2}},
    {"kind": "relu", "config": {}},
    {"kind": "maxpool2d", "config": {"kernel_size": [3, 2]}},
]
# (40 - 2 - 1) // 2 + 1 = 19, (52 - 3) // 2 + 1 = 25; then floor((19 - 3) / 3) + 1 = 6, floor((25 - 2) / 2) + 1 = 12
EXPECTED_SHAPES = ["(1, 16, 19, 25)", "(1, 16, 19, 25)", "(1, 16, 6, 12)"]


def wait(driver, condition, seconds: float = WAIT_SECONDS):
    return WebDriverWait(driver, seconds).until(lambda _: condition())


def console_errors(driver) -> list[dict]:
    """Console messages at error level since the last call (CSP violations and failed loads included)."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def open_page(driver, url: str) -> None:
    driver.get(url)
    wait(driver, lambda: driver.find_elements(By.CSS_SELECTOR, "#shape-table tbody tr")
         or driver.find_element(By.ID, "banner").is_displayed())


def type_into(element, text: str) -> None:
    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.BACKSPACE)
    element.send_keys(text)


def field(driver, index: int, name: str):
    return driver.find_element(By.ID, f"layer-{index}-{name}")


def shape_rows(driver) -> list[str]:
    """The output-shape column of the shape table, once it is up to date. Read in one script: the
    table is redrawn whenever a /v1/shapes answer arrives, so element handles can go stale."""
    script = """const table = document.getElementById('shape-table');
        if (table.getAttribute('data-state') === 'pending') return null;
        return [...table.querySelectorAll('tbody tr:not(.formula-row)')].map(row => row.cells[2].innerText.trim());"""
    return wait(driver, lambda: driver.execute_script(script))


def checkerboard(height: int, width: int, cell: int) -> np.ndarray:
    """The page's checkerboard, written again here: red on the odd cells, green on the even, blue 0.5."""
    i, j = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    on = ((i // cell + j // cell) % 2).astype(np.float32)
    return np.stack([on, 1 - on, np.full_like(on, 0.5)])[None]


def api_outputs(url: str, x: np.ndarray, layers: list[dict], seed: int = 0) -> list[np.ndarray]:
    body = {"layers": layers, "input": {"data": x.ravel().tolist(), "shape": list(x.shape)}, "seed": seed,
            "return_intermediates": True, "encoding": "base64"}
    response = httpx.post(f"{url}/v1/sequential", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return [np.frombuffer(base64.b64decode(layer["output"]["base64"]), dtype="<f4").reshape(layer["output"]["shape"])
            for layer in response.json()["layers"]]


def read_heatmap(driver, layer: int, channel: int) -> tuple[np.ndarray, float, float]:
    """A drawn map's colour levels (from its canvas's pixels, through the page's colour map) and its range."""
    return read_canvas(driver, f'#out-{layer} canvas.heatmap[data-channel="{channel}"]')


def read_canvas(driver, selector: str) -> tuple[np.ndarray, float, float]:
    """The colour levels of the heat map drawn on the canvas at `selector`, and its range."""
    found = driver.execute_script("""
        const canvas = document.querySelector(arguments[0]);
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        return {rgba: Array.from(pixels), width: canvas.width, height: canvas.height,
                min: canvas.dataset.min, max: canvas.dataset.max, lut: window.layerlabPlayground.colormap};
    """, selector)
    rgba = np.array(found["rgba"], dtype=np.int64).reshape(found["height"], found["width"], 4)
    lut = np.array(found["lut"], dtype=np.int64)
    assert len({tuple(colour) for colour in lut}) == 256  # one colour per level
    # Each pixel's colour is exactly one of the map's 256 colours: its level is that colour's index.
    distance = np.abs(rgba[..., None, :3] - lut[None, None]).sum(-1)
    assert (distance.min(-1) == 0).all(), "a drawn pixel is not a colour of the colour map"
    return distance.argmin(-1), float(found["min"]), float(found["max"])


def build_notebook_stack(driver) -> None:
    """Through the editor, as a learner would: empty the stack, pick a checkerboard, add the three layers."""
    while driver.find_elements(By.CSS_SELECTOR, "#stack .remove"):
        driver.find_element(By.CSS_SELECTOR, "#stack .remove").click()
    driver.find_element(By.CSS_SELECTOR, "input[name=source][value=checkerboard]").click()
    for element_id, value in (("gen-height", HEIGHT), ("gen-width", WIDTH), ("gen-cell", CELL)):
        type_into(driver.find_element(By.ID, element_id), str(value))
    kinds = Select(driver.find_element(By.ID, "add-kind"))
    for index, layer in enumerate(NOTEBOOK_LAYERS):
        kinds.select_by_value(layer["kind"])
        driver.find_element(By.ID, "add-layer").click()
        for name, value in layer["config"].items():
            text = f"({value[0]}, {value[1]})" if isinstance(value, list) else str(value)
            type_into(field(driver, index, name), text)


def run(driver) -> None:
    driver.find_element(By.ID, "run").click()
    wait(driver, lambda: driver.find_element(By.ID, "run-state").text.startswith(("torch", "reference", "The run failed")))


@pytest.fixture(scope="module")
def notebook(browser, live_server):
    """The page with the notebook's stack built and run; (driver, the API's own outputs for the same request)."""
    open_page(browser, f"{live_server}/playground")
    console_errors(browser)
    build_notebook_stack(browser)
    assert shape_rows(browser) == EXPECTED_SHAPES
    run(browser)
    return browser, api_outputs(live_server, checkerboard(HEIGHT, WIDTH, CELL), NOTEBOOK_LAYERS)


def test_the_page_loads_with_no_failed_request_and_no_console_error(browser, live_server):
    open_page(browser, f"{live_server}/playground")
    assert not browser.find_element(By.ID, "banner").is_displayed()
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => [e.name, e.responseStatus])")
    paths = {name.removeprefix(live_server): status for name, status in resources}
    assert {"/static/playground/playground.js", "/static/playground/playground.css", "/v1/layers", "/v1/shapes"} <= set(paths)
    assert all(status == 200 for status in paths.values()), paths
    assert console_errors(browser) == []
    # every kind the server has is offered, with the notebook's stack as the starting point
    offered = [option.get_attribute("value") for option in Select(browser.find_element(By.ID, "add-kind")).options]
    assert offered == [entry["kind"] for entry in httpx.get(f"{live_server}/v1/layers").json()]
    assert field(browser, 0, "padding_mode").get_attribute("value") == "zeros"  # defaults from GET /v1/layers


def test_the_notebook_stack_shows_16_feature_maps_and_its_shapes(notebook):
    driver, outputs = notebook
    assert console_errors(driver) == []
    titles = [element.text for element in driver.find_elements(By.CSS_SELECTOR, ".layer-out h3")]
    assert titles == [f"0 · Conv2d → {EXPECTED_SHAPES[0]}", f"1 · ReLU → {EXPECTED_SHAPES[1]}",
                      f"2 · MaxPool2d → {EXPECTED_SHAPES[2]}"]
    for index in range(3):
        maps = driver.find_elements(By.CSS_SELECTOR, f"#out-{index} canvas.heatmap")
        assert len(maps) == 16
        assert (int(maps[0].get_attribute("height")), int(maps[0].get_attribute("width"))) == outputs[index].shape[2:]
    assert len(driver.find_elements(By.CSS_SELECTOR, "#out-0 canvas.kernel")) == 16  # the conv's 16 kernels
    formulas = driver.find_element(By.CSS_SELECTOR, "#shape-table tbody tr.formula-row").text
    assert "H_out = floor((40 + 2*0 - 1*(3-1) - 1) / 2) + 1 = 19" in formulas
    receptive = driver.find_elements(By.CSS_SELECTOR, "#shape-table tbody tr:not(.formula-row)")[2]
    assert receptive.find_elements(By.TAG_NAME, "td")[5].text == "7×5 (6×4)"
    ARTIFACTS.mkdir(exist_ok=True)
    driver.set_window_size(1280, 1000)  # the editor, the shapes and the first layers' maps
    try:
        assert driver.save_screenshot(str(ARTIFACTS / "playground-1280.png"))
    finally:
        driver.set_window_size(1280, 1800)


def test_a_drawn_feature_map_reads_back_to_the_api_output(notebook):
    driver, outputs = notebook
    for layer, channel in ((0, 5), (2, 11)):
        expected = outputs[layer][0, channel]
        levels, low, high = read_heatmap(driver, layer, channel)
        # shared scale: the range is the whole layer's output, exactly as the API returned it
        assert (low, high) == (float(outputs[layer].min()), float(outputs[layer].max()))
        values = low + levels / 255 * (high - low)
        assert np.abs(values - expected).max() <= (high - low) / 510 * 1.001

    driver.find_element(By.CSS_SELECTOR, "input[name=scale][value=channel]").click()
    levels, low, high = read_heatmap(driver, 0, 5)
    expected = outputs[0][0, 5]
    assert (low, high) == (float(expected.min()), float(expected.max()))
    assert np.abs(low + levels / 255 * (high - low) - expected).max() <= (high - low) / 510 * 1.001
    driver.find_element(By.CSS_SELECTOR, "input[name=scale][value=shared]").click()


def test_a_shared_link_restores_the_same_view(notebook, live_server):
    driver, _ = notebook
    link = driver.current_url
    assert "#state=" in link
    before = driver.execute_script("return document.querySelector('#out-2 canvas.heatmap').toDataURL()")
    driver.get("about:blank")
    driver.get(link)
    wait(driver, lambda: len(driver.find_elements(By.CSS_SELECTOR, "#out-2 canvas.heatmap")) == 16)
    assert shape_rows(driver) == EXPECTED_SHAPES
    assert field(driver, 2, "kernel_size").get_attribute("value") == "(3, 2)"
    assert driver.find_element(By.CSS_SELECTOR, "input[name=source][value=checkerboard]").is_selected()
    after = driver.execute_script("return document.querySelector('#out-2 canvas.heatmap').toDataURL()")
    assert after == before
    assert console_errors(driver) == []


def copied(driver, format_name: str) -> str:
    Select(driver.find_element(By.ID, "copy-as")).select_by_value(format_name)
    driver.find_element(By.ID, "copy").click()
    return driver.find_element(By.ID, "copy-text").get_attribute("value")


def test_copy_as_pytorch_gives_the_api_output(notebook, tmp_path):
    driver, outputs = notebook
    code = copied(driver, "pytorch")
    assert "nn.Conv2d(in_channels=3, out_channels=16, kernel_size=3, stride=2)" in code
    assert "nn.MaxPool2d(kernel_size=(3, 2))" in code
    script = tmp_path / "copied.py"
    script.write_text(code + f"\nimport numpy\nnumpy.save({str(tmp_path / 'out.npy')!r}, h.numpy())\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), outputs[2], rtol=1.3e-6, atol=1e-5)


def test_copy_as_sdk_and_curl_give_the_api_output(notebook, tmp_path):
    driver, outputs = notebook
    code = copied(driver, "sdk")
    assert 'layer("maxpool2d", kernel_size=(3, 2))' in code
    script = tmp_path / "sdk.py"
    script.write_text(code + f"\nnp.save({str(tmp_path / 'out.npy')!r}, result.output)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), outputs[2])

    if shutil.which("curl"):
        done = subprocess.run(["bash", "-c", copied(driver, "curl")], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        output = json.loads(done.stdout)["output"]
        np.testing.assert_array_equal(
            np.frombuffer(base64.b64decode(output["base64"]), dtype="<f4").reshape(output["shape"]), outputs[2])


def test_the_saliency_picture_is_the_input_gradient_torch_gives(notebook, tmp_path):
    driver, _ = notebook
    driver.find_element(By.ID, "saliency").click()
    try:
        run(driver)
        wait(driver, lambda: driver.find_elements(By.ID, "saliency-map"))
        levels, low, high = read_canvas(driver, "#saliency-map")
        # The oracle: torch autograd on the same input and model, through the page's own "copy as PyTorch".
        code = copied(driver, "pytorch")
        assert "h.sum().backward()" in code
        script = tmp_path / "saliency.py"
        script.write_text(code + f"\nimport numpy\nnumpy.save({str(tmp_path / 'grad.npy')!r}, x.grad.numpy())\n")
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        expected = np.abs(np.load(tmp_path / "grad.npy")[0]).max(axis=0)  # |dL/dx| of item 0, max over channels
        assert levels.shape == expected.shape == (HEIGHT, WIDTH)
        np.testing.assert_allclose([low, high], [expected.min(), expected.max()], rtol=1e-4, atol=1e-6)
        values = low + levels / 255 * (high - low)
        assert np.abs(values - expected).max() <= (high - low) / 510 * 1.001 + 1e-5
        assert "gradients=True" in copied(driver, "sdk")
        assert console_errors(driver) == []
    finally:
        driver.find_element(By.ID, "saliency").click()
    assert "gradients" not in copied(driver, "curl")


def test_a_wrong_in_channels_shows_the_servers_message_at_that_field(notebook, live_server):
    driver, _ = notebook
    in_channels = field(driver, 0, "in_channels")
    message = driver.find_element(By.ID, "err-layers[0].config.in_channels")
    layers = [dict(layer, config=dict(layer["config"])) for layer in NOTEBOOK_LAYERS]
    for typed, value in (("4", 4), ("0", 0)):
        type_into(in_channels, typed)
        layers[0]["config"]["in_channels"] = value
        server = httpx.post(f"{live_server}/v1/shapes", json={"input_shape": [1, 3, HEIGHT, WIDTH], "layers": layers})
        assert server.status_code == 422
        error = server.json()
        expected = error["detail"] if "errors" not in error else f"{error['field']}: {error['errors'][0]['message']}"
        wait(driver, lambda expected=expected: message.is_displayed() and message.text == expected)
        assert in_channels.get_attribute("aria-invalid") == "true"
        assert "invalid" in driver.find_element(By.ID, "layer-0").get_attribute("class")
    # "4": the channel count disagrees with the input (field `layers[0]`, the message names config.in_channels);
    # "0": the config itself is invalid (field `layers[0].config.in_channels`)
    type_into(in_channels, "3")
    wait(driver, lambda: not message.is_displayed())
    assert shape_rows(driver) == EXPECTED_SHAPES
    assert {entry["message"].split(" - ")[0] for entry in console_errors(driver)} == {f"{live_server}/v1/shapes"}  # the 422s


def test_the_phone_layout(notebook):
    driver, _ = notebook
    driver.set_window_size(390, 1100)
    try:
        run(driver)
        wide = driver.execute_script("return document.documentElement.scrollWidth")
        assert wide <= 390  # nothing forces a sideways scroll of the page
        ARTIFACTS.mkdir(exist_ok=True)
        driver.execute_script("document.getElementById('results-title').scrollIntoView()")
        assert driver.save_screenshot(str(ARTIFACTS / "playground-phone.png"))
    finally:
        driver.set_window_size(1280, 1800)


def state_link(url: str, state: dict) -> str:
    """A share link written here, as the page writes them: #state=<base64url of the state's JSON>."""
    encoded = base64.urlsafe_b64encode(json.dumps(state).encode()).decode().rstrip("=")
    return f"{url}/playground#state={encoded}"


def test_a_link_runs_batchnorm_and_maxpool_compared_with_charts_and_indices(browser, live_server):
    """A link made outside the page: random input, BatchNorm's statistics drawn, max-pool indices on
    hover, both backends compared."""
    layers = [
        {"kind": "conv2d", "config": {"in_channels": 2, "out_channels": 3, "kernel_size": 3}},
        {"kind": "batchnorm2d", "config": {"num_features": 3}},
        {"kind": "maxpool2d", "config": {"kernel_size": 2, "return_indices": True}},
    ]
    state = {"source": "random", "gen": {"height": "10", "width": "10", "channels": "2", "dist": "normal", "seed": "4"},
             "layers": [{"kind": layer["kind"], "values": {name: str(value) if not isinstance(value, bool) else value
                                                          for name, value in layer["config"].items()}}
                        for layer in layers],
             "seed": "7", "backend": "compare", "training": True, "ran": True}
    browser.get(state_link(live_server, state))
    wait(browser, lambda: len(browser.find_elements(By.CSS_SELECTOR, "#out-2 canvas.heatmap")) == 3)
    api = httpx.post(f"{live_server}/v1/sequential", json={
        "layers": layers, "input": {"random": "normal", "shape": [1, 2, 10, 10], "seed": 4}, "seed": 7,
        "compare": True, "return_intermediates": True}).json()

    comparison = browser.find_element(By.ID, "comparison").text
    drawn = float(comparison.split("max |difference| ")[1].split(",")[0])
    assert drawn == api["comparison"]["max_abs_diff"] and "every layer within tolerance: yes" in comparison
    assert len(browser.find_elements(By.CSS_SELECTOR, ".layer-comparison")) == 3
    charts = [chart.get_attribute("aria-label") for chart in browser.find_elements(By.CSS_SELECTOR, "#out-1 .chart canvas")]
    assert len(charts) == 2 and charts[0].startswith("mean per channel") and charts[1].startswith("var per channel")
    drawn_mean = [float(v) for v in re.search(r"Batch: (.*?)\.( |$)", charts[0])[1].split(", ")]  # 4 digits
    assert drawn_mean == pytest.approx(api["layers"][1]["statistics"]["mean"]["data"], rel=1e-3, abs=1e-6)
    drawn_var = [float(v) for v in re.search(r"Running: (.*?)\.( |$)", charts[1])[1].split(", ")]
    assert drawn_var == pytest.approx(api["layers"][1]["buffers"]["running_var"]["data"], rel=1e-3)

    pooled = browser.find_element(By.CSS_SELECTOR, '#out-2 canvas.heatmap[data-channel="1"]')
    corner = -pooled.size["width"] // 2 + 2, -pooled.size["height"] // 2 + 2  # offsets from the centre
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", pooled)
    ActionChains(browser).move_to_element_with_offset(pooled, *corner).perform()
    wait(browser, lambda: "position (0, 0): " in browser.find_element(By.ID, "hover-info").text)
    hover = browser.find_element(By.ID, "hover-info").text
    value = float(hover.split("position (0, 0): ")[1].split(";")[0])
    assert value == pytest.approx(api["layers"][2]["output"]["data"][0][1][0][0], rel=1e-3)
    index = api["layers"][2]["indices"]["data"][0][1][0][0]
    assert f"input element {index} = ({index // 8}, {index % 8})" in hover  # the conv's output is 8 x 8
    # the same from the keyboard: focus the map, then an arrow key moves to (0, 1)
    pooled.send_keys(Keys.ARROW_RIGHT)
    hover = browser.find_element(By.ID, "hover-info").text
    index = api["layers"][2]["indices"]["data"][0][1][0][1]
    assert "position (0, 1)" in hover and f"input element {index} = ({index // 8}, {index % 8})" in hover
    assert console_errors(browser) == []


def test_a_pasted_tensor_copies_as_pytorch_with_the_same_output(browser, live_server, tmp_path):
    """A tensor pasted in the API's {"data", "shape"} form (a batch of 2): the page runs it, and the
    copied PyTorch code rebuilds the same tensor and gets the same output."""
    x = np.random.default_rng(1).standard_normal((2, 1, 3, 4)).astype(np.float32)
    pasted = {"data": x.ravel().tolist(), "shape": list(x.shape)}
    layers = [{"kind": "conv2d", "config": {"in_channels": 1, "out_channels": 2, "kernel_size": 2}}]
    state = {"source": "json", "json": json.dumps(pasted), "seed": "3",
             "layers": [{"kind": "conv2d", "values": {"in_channels": "1", "out_channels": "2", "kernel_size": "2"}}]}
    browser.get(state_link(live_server, state))
    assert shape_rows(browser) == ["(2, 2, 2, 3)"]
    run(browser)
    assert "Batch item 0 of 2 is drawn." in browser.find_element(By.ID, "out-0").text
    code = copied(browser, "pytorch")
    script = tmp_path / "pasted.py"
    script.write_text(code + f"\nimport numpy\nnumpy.save({str(tmp_path / 'out.npy')!r}, h.numpy())\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    expected = api_outputs(live_server, x, layers, seed=3)[0]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1.3e-6, atol=1e-5)


def test_layers_move_and_go_with_the_keyboard(browser, live_server):
    open_page(browser, f"{live_server}/playground")
    down = browser.find_element(By.CSS_SELECTOR, "#layer-0 .move-down")
    down.send_keys(Keys.ENTER)
    titles = [element.text for element in browser.find_elements(By.CSS_SELECTOR, "#stack h3")]
    assert titles == ["0 · nn.ReLU", "1 · nn.Conv2d", "2 · nn.MaxPool2d"]
    focused = browser.switch_to.active_element
    assert focused.get_attribute("aria-label") == "Move layer 1 down"  # focus follows the moved layer
    browser.find_element(By.CSS_SELECTOR, "#layer-0 .remove").send_keys(Keys.SPACE)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#stack > li")) == 2
    assert shape_rows(browser) == ["(1, 16, 59, 79)", "(1, 16, 19, 39)"]


def test_an_answer_for_an_older_stack_is_not_drawn(browser, live_server):
    """A /v1/shapes answer that arrives after the stack changed again is dropped, not drawn as current
    (under load the answer to the previous edit can land within the next edit's debounce)."""
    open_page(browser, f"{live_server}/playground")
    assert len(shape_rows(browser)) == 3
    # Hold /v1/shapes answers in the page until the test lets them through.
    browser.execute_script("""
        const realFetch = window.fetch;
        window.heldShapes = [];
        window.realFetch = realFetch;
        window.fetch = (url, options) => {
          if (!String(url).includes('/v1/shapes')) return realFetch(url, options);
          const answer = realFetch(url, options);
          const held = {arrived: false};
          answer.then(() => { held.arrived = true; });
          return new Promise((resolve) => { held.release = () => resolve(answer); window.heldShapes.push(held); });
        };""")
    browser.find_element(By.CSS_SELECTOR, "#layer-0 .move-down").send_keys(Keys.ENTER)  # ReLU first
    wait(browser, lambda: browser.execute_script("return window.heldShapes.length === 1 && window.heldShapes[0].arrived"))
    # In one turn of the page's event loop: the ReLU goes, then the move's answer is let through.
    browser.execute_script("""
        document.querySelector('#layer-0 .remove').click();
        window.fetch = window.realFetch;
        window.heldShapes[0].release();""")
    assert shape_rows(browser) == ["(1, 16, 59, 79)", "(1, 16, 19, 39)"]


def png(pixels: np.ndarray) -> bytes:
    """An RGB uint8 image as a PNG file (no imaging library needed)."""
    height, width, _ = pixels.shape
    raw = b"".join(b"\0" + pixels[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_an_uploaded_image_becomes_the_input_tensor(browser, live_server, tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, size=(12, 20, 3), dtype=np.uint8)
    (tmp_path / "small.png").write_bytes(png(pixels))
    big = np.zeros((300, 600, 3), dtype=np.uint8)
    (tmp_path / "big.png").write_bytes(png(big))
    open_page(browser, f"{live_server}/playground")
    browser.find_element(By.CSS_SELECTOR, "input[name=source][value=image]").click()
    browser.find_element(By.ID, "image-file").send_keys(str(tmp_path / "small.png"))
    wait(browser, lambda: "(1, 3, 12, 20)" in browser.find_element(By.ID, "input-info").text)
    body = json.loads(browser.execute_script("return window.layerlabPlayground.copyText('curl')").split("\n")[1])
    sent = np.frombuffer(base64.b64decode(body["input"]["base64"]), dtype="<f4").reshape(body["input"]["shape"])
    np.testing.assert_array_equal(sent, (pixels.transpose(2, 0, 1)[None] / np.float32(255)).astype(np.float32))

    browser.find_element(By.ID, "image-file").send_keys(str(tmp_path / "big.png"))  # resized: 128 px on the longer side
    wait(browser, lambda: "(1, 3, 64, 128)" in browser.find_element(By.ID, "input-info").text)
    assert shape_rows(browser) == ["(1, 16, 31, 63)", "(1, 16, 31, 63)", "(1, 16, 10, 31)"]
    assert console_errors(browser) == []


def test_with_api_keys_the_page_is_open_and_asks_for_a_key(browser):
    key = "playground-key-5e1f"
    with ServerThread(api_key=[key]) as server:  # in this process: no second torch import to wait for
        for path in ("/playground", "/static/playground/playground.js", "/static/playground/playground.css"):
            assert httpx.get(f"{server.url}{path}").status_code == 200
        open_page(browser, f"{server.url}/playground")
        assert "needs an API key" in browser.find_element(By.ID, "banner").text
        key_input = browser.find_element(By.ID, "api-key")
        assert key_input.is_displayed() and browser.switch_to.active_element == key_input
        key_input.send_keys(key)
        browser.find_element(By.ID, "api-key-save").send_keys(Keys.ENTER)
        wait(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "#shape-table tbody tr"))
        assert not browser.find_element(By.ID, "banner").is_displayed()
        assert key not in browser.current_url  # the key never goes into a shared link
        console_errors(browser)  # the first, keyless /v1/layers was a 401: expected here
