"""The access lines' handler (app.logs.AccessLineHandler): the middleware writes a line straight to it
only when logging would hand it every record and nothing else would see them; else through logging."""

import io
import logging

import orjson
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.logs import ACCESS_LOGGER, AccessLineHandler
from app.main import create_app

BODY = {"config": {"in_features": 2, "out_features": 1}, "input": [[1.0, 2.0]]}


@pytest.fixture
def access_logger():
    """The access logger as app.logs configures it, writing to a buffer; restored afterwards. Its
    handlers are set in the test itself: pytest adds its capturing handlers when the test starts."""
    logger = logging.getLogger(ACCESS_LOGGER)
    saved = logger.handlers[:], logger.propagate, logger.level, logger.filters[:]
    stream = io.StringIO()
    handler = AccessLineHandler(stream)
    logger.propagate, logger.filters = False, []
    logger.setLevel(logging.INFO)
    yield logger, handler, stream
    logger.handlers, logger.propagate, logger.level, logger.filters = saved[0], saved[1], saved[2], saved[3]


def lines(stream: io.StringIO) -> list[dict]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_a_request_writes_one_json_line_straight_to_the_handler(access_logger):
    logger, handler, stream = access_logger
    logger.handlers = [handler]
    records = []
    handler.emit = records.append  # type: ignore[method-assign]  # a record would mean the slow path
    with TestClient(create_app(Settings())) as client:
        response = client.post("/v1/layers/linear", json=BODY, headers={"x-request-id": "line-1"})
    assert response.status_code == 200
    (line,) = [line for line in lines(stream) if line["request_id"] == "line-1"]
    assert line["route"] == "/v1/layers/linear" and line["status"] == 200 and line["kind"] == "linear"
    assert line["level"] == "info" and line["bytes_in"] == len(orjson.dumps(BODY))
    assert records == []


@pytest.mark.parametrize("change", ["filter", "propagate", "second handler", "handler level"])
def test_any_other_configuration_goes_through_logging_with_the_same_line(access_logger, change):
    logger, handler, stream = access_logger
    logger.handlers = [handler]
    seen: list[logging.LogRecord] = []
    if change == "filter":
        logger.addFilter(lambda record: seen.append(record) or True)
    elif change == "propagate":
        logger.propagate = True
    elif change == "second handler":
        other = logging.Handler()
        other.emit = seen.append  # type: ignore[method-assign]
        logger.addHandler(other)
    else:
        handler.setLevel(logging.WARNING)  # info lines must not reach it
    assert AccessLineHandler.sole_handler(logger, logging.INFO) is None
    with TestClient(create_app(Settings())) as client:
        client.post("/v1/layers/linear", json=BODY, headers={"x-request-id": "line-2"})
        client.post("/v1/layers/linear", json={"config": {}}, headers={"x-request-id": "line-3"})  # a 422: warning
    written = {line["request_id"]: line for line in lines(stream)}
    if change == "handler level":
        assert "line-2" not in written and written["line-3"]["status"] == 422
    else:
        assert {"line-2", "line-3"} <= set(written)
    if change in ("filter", "second handler"):
        assert {orjson.loads(r.getMessage())["request_id"] for r in seen} >= {"line-2", "line-3"}
        assert [r.levelno for r in seen if orjson.loads(r.getMessage())["request_id"] == "line-3"] == [logging.WARNING]


def test_a_broken_stream_is_reported_by_logging_not_raised(access_logger, capsys):
    _, handler, _ = access_logger
    handler.stream = io.StringIO()
    handler.stream.close()  # writing raises ValueError
    handler.write_line('{"request_id": "lost"}')
    assert "Logging error" in capsys.readouterr().err
