"""app.config on its own: a bad LAYERLAB_* value is one line naming the variable, its value and the
expected form; a misspelled one is named with the closest setting; non-finite numbers are refused."""

import math

import pytest

from app.config import OTHER_VARIABLES, Settings, SettingsError, expected_form, load_settings, unknown_variables

FLOAT_SETTINGS = [name for name, info in Settings.model_fields.items() if info.annotation is float]


@pytest.fixture
def clean_environment(monkeypatch):
    """No LAYERLAB_* variable from the machine running the tests."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("LAYERLAB_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize("variable, value, expected", [
    ("LAYERLAB_MAX_BODY_BYTES", "abc", "expected an integer > 0"),
    ("LAYERLAB_MAX_BODY_BYTES", "0", "expected an integer > 0"),
    ("LAYERLAB_PORT", "70000", "expected an integer >= 0 and <= 65535"),
    ("LAYERLAB_TORCH_THREADS", "-1", "expected an integer >= 0"),
    ("LAYERLAB_COMPUTE_TIMEOUT_S", "1e999", "expected a finite number > 0"),
    ("LAYERLAB_COMPUTE_TIMEOUT_S", "nan", "expected a finite number > 0"),
    ("LAYERLAB_COMPUTE_QUEUE_TIMEOUT_S", "-inf", "expected a finite number > 0"),
    ("LAYERLAB_LOOP", "fast", "expected one of auto, uvloop, asyncio"),
    ("LAYERLAB_LOG_LEVEL", "loud", "expected one of critical, error, warning, info, debug"),
    ("LAYERLAB_ACCESS_LOG", "maybe", "expected true or false"),
    ("LAYERLAB_CORS_ORIGINS", "[not json", "expected a comma-separated list or a JSON list"),
])
def test_a_bad_value_is_one_line_naming_variable_value_and_form(clean_environment, variable, value, expected):
    clean_environment.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert f"{variable}={value!r}: {expected}" in message, message


def test_every_bad_variable_is_named_at_once(clean_environment):
    clean_environment.setenv("LAYERLAB_MAX_BODY_BYTES", "abc")
    clean_environment.setenv("LAYERLAB_WORKERS", "two")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "LAYERLAB_MAX_BODY_BYTES='abc'" in message and "LAYERLAB_WORKERS='two'" in message and "\n" not in message


def test_a_bad_api_key_list_is_not_echoed(clean_environment):
    clean_environment.setenv("LAYERLAB_API_KEY", '["secret-key-value"')
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "LAYERLAB_API_KEY=(hidden)" in message and "secret-key-value" not in message


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e999", "Infinity"])
@pytest.mark.parametrize("name", FLOAT_SETTINGS)
def test_every_float_setting_refuses_non_finite_numbers(clean_environment, name, value):
    assert FLOAT_SETTINGS  # the compute time limits, at least
    clean_environment.setenv(f"LAYERLAB_{name.upper()}", value)
    with pytest.raises(SettingsError, match=f"LAYERLAB_{name.upper()}"):
        load_settings()
    assert "finite" in expected_form(name)
    with pytest.raises(ValueError):
        Settings(**{name: math.inf})


def test_good_values_still_load(clean_environment):
    clean_environment.setenv("LAYERLAB_COMPUTE_TIMEOUT_S", "2.5")
    clean_environment.setenv("LAYERLAB_MAX_BODY_BYTES", "1024")
    settings = load_settings()
    assert settings.compute_timeout_s == 2.5 and settings.max_body_bytes == 1024


def test_misspelled_variables_are_named_with_the_closest_setting():
    environ = {"LAYERLAB_MAX_BODYBYTES": "5", "LAYERLAB_COMPUTE_TIMEOUTS": "3", "layerlab_prot": "1",
               "LAYERLAB_XYZZY": "1", "LAYERLAB_MAX_BODY_BYTES": "5", "PATH": "/bin", **dict.fromkeys(OTHER_VARIABLES, "x")}
    lines = unknown_variables(environ)
    assert lines == [
        "LAYERLAB_COMPUTE_TIMEOUTS is not a layerlab setting and is ignored; did you mean LAYERLAB_COMPUTE_TIMEOUT_S?",
        "LAYERLAB_MAX_BODYBYTES is not a layerlab setting and is ignored; did you mean LAYERLAB_MAX_BODY_BYTES?",
        "LAYERLAB_XYZZY is not a layerlab setting and is ignored; no setting has a similar name",
        "layerlab_prot is not a layerlab setting and is ignored; did you mean LAYERLAB_PORT?",
    ]


def test_every_setting_has_an_expected_form():
    for name in Settings.model_fields:
        assert expected_form(name)
