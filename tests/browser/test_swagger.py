"""Swagger UI in a real headless Chromium against a real uvicorn: /docs loads (offline: its assets are
served by the app), every operation is listed, the examples are a dropdown, and "Try it out" then
"Execute" on the Linear example shows a 200 with the output. Screenshot: test-artifacts/swagger.png.

Needs Debian's chromium and chromium-driver (`apt-get install -y chromium chromium-driver`).
"""

import json
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import Select, WebDriverWait

WINDOW_SIZE = "1400,2400"  # for conftest's browser
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
WAIT_SECONDS = 30
LINEAR = "operations-layers-layers-linear"


@pytest.fixture(scope="module")
def docs(browser, live_server):
    browser.get(f"{live_server}/docs")
    WebDriverWait(browser, WAIT_SECONDS).until(ready.presence_of_element_located((By.ID, LINEAR)))
    return browser


def open_operation(driver, element_id: str) -> WebElement:
    operation = driver.find_element(By.ID, element_id)
    if "is-open" not in operation.get_attribute("class"):
        operation.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    return operation


def execute(driver, operation: WebElement) -> tuple[str, dict]:
    """Press Execute; wait for the live response; (its status, its JSON body)."""
    for clear in operation.find_elements(By.CSS_SELECTOR, ".btn-clear"):  # drop a previous response
        clear.click()
    WebDriverWait(driver, WAIT_SECONDS).until(
        lambda _: not operation.find_elements(By.CSS_SELECTOR, ".live-responses-table"))
    operation.find_element(By.CSS_SELECTOR, ".execute").click()
    status_cell = WebDriverWait(driver, WAIT_SECONDS).until(lambda _: operation.find_element(
        By.CSS_SELECTOR, ".live-responses-table tbody .response-col_status"))
    body = operation.find_element(By.CSS_SELECTOR, ".live-responses-table .response-col_description pre")
    # the highlighter may still be painting: read the text the page copies to the clipboard
    text = WebDriverWait(driver, WAIT_SECONDS).until(lambda _: body.get_attribute("textContent"))
    return status_cell.text.strip(), json.loads(text)


def test_every_operation_is_listed(docs, client):
    schema = client.get("/openapi.json").json()
    expected = {f"operations-{operation['tags'][0]}-{operation['operationId']}"
                for item in schema["paths"].values() for operation in item.values()}
    listed = {element.get_attribute("id") for element in docs.find_elements(By.CSS_SELECTOR, ".opblock")}
    assert expected <= listed, f"not in Swagger UI: {sorted(expected - listed)}"
    assert docs.find_elements(By.CSS_SELECTOR, ".opblock-summary-description")  # summaries shown


def test_linear_example_try_it_out_then_execute(docs):
    operation = open_operation(docs, LINEAR)
    WebDriverWait(docs, WAIT_SECONDS).until(lambda _: operation.find_element(By.CSS_SELECTOR, ".try-out__btn")).click()

    examples = Select(operation.find_element(By.CSS_SELECTOR, "select.examples-select-element"))
    names = [option.text for option in examples.options]
    assert "Linear 10x4 to 1 (the notebook's first cell)" in names, names
    examples.select_by_visible_text("Linear 10x4 to 1 (the notebook's first cell)")

    status, body = execute(docs, operation)
    assert status == "200"
    assert body["output_shape"] == [10, 1] and len(body["output"]["data"]) == 10
    assert body["output"]["data"][0][0] == pytest.approx(-0.2397, abs=1e-4)  # the notebook's first output
    assert body["comparison"]["allclose"] is True

    docs.execute_script("arguments[0].scrollIntoView()", operation)
    ARTIFACTS.mkdir(exist_ok=True)
    assert docs.save_screenshot(str(ARTIFACTS / "swagger.png"))


def test_picking_another_example_sends_it(docs):
    operation = open_operation(docs, LINEAR)
    if operation.find_elements(By.CSS_SELECTOR, ".try-out__btn:not(.cancel)"):
        operation.find_element(By.CSS_SELECTOR, ".try-out__btn").click()
    examples = Select(operation.find_element(By.CSS_SELECTOR, "select.examples-select-element"))
    examples.select_by_visible_text("Linear 4 to 1 on torch.randn(10, 4) with seed 0, reference backend")
    editor = operation.find_element(By.CSS_SELECTOR, "textarea.body-param__text")
    WebDriverWait(docs, WAIT_SECONDS).until(lambda _: '"random"' in editor.get_attribute("value"))

    status, body = execute(docs, operation)
    assert status == "200"
    assert body["backend"] == "reference" and body["input_shape"] == [10, 4]
