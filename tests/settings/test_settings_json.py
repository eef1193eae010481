"""A malformed JSON setting says where: the variable, line, column and the text there."""

from __future__ import annotations

import pytest

from settings import SettingsError, get_settings


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (
            '{"units": 64,\n "max_epochs": 5O}',
            "CDDF_FORECASTER is not valid JSON: Expecting ',' delimiter at line 2, column 17: "
            "' \"max_epochs\": 5O}' (at 'O}')",
        ),
        ('{"units": ', "Expecting value at line 1, column 11: '{\"units\": ' (at its end)"),
    ],
)
def test_malformed_json_names_the_line_column_and_text(monkeypatch, value, says):
    monkeypatch.setenv("CDDF_FORECASTER", value)
    with pytest.raises(SettingsError) as raised:
        get_settings()
    assert says in str(raised.value)
    assert "error parsing value" not in str(raised.value)
