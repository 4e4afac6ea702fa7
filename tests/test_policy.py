import json

import pytest

from hwsearch.errors import HwsearchError
from hwsearch.policy import Policy


def test_empty_policy_is_the_baseline():
    p = Policy.from_dict({})
    assert p.keep_for("anything") == 1.0
    assert p.precision_for("anything") == "fp32"


def test_defaults_alone_are_a_valid_policy():
    p = Policy.from_dict({"default_keep": 0.5, "default_precision": "int8"})
    assert p.keep_for("g") == 0.5 and p.precision_for("conv") == "int8"


def test_json_round_trip():
    p = Policy.from_dict({"keep": {"a": 0.25}, "precision": {"b": "fp16"}, "default_keep": 0.75})
    again = Policy.from_dict(json.loads(p.to_json()))
    assert again == p and again.keep_for("a") == 0.25 and again.precision_for("b") == "fp16"


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"default_keep": 0.0}, "outside (0, 1]"),
        ({"keep": {"g": 1.5}}, "outside (0, 1]"),
        ({"keep": {"g": "half"}}, "not a number"),
        ({"default_precision": "int4"}, "'int4' is unknown"),
        ({"precision": {"conv": "bf16"}}, "'bf16' is unknown"),
        ({"keeps": {}}, "'keeps' is unknown"),
    ],
)
def test_bad_values_name_the_value_and_the_fix(data, needle):
    with pytest.raises(HwsearchError) as err:
        Policy.from_dict(data)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg and ("use" in msg or "allowed" in msg)


def test_load_reports_missing_and_malformed_files(tmp_path):
    with pytest.raises(HwsearchError, match="does not exist"):
        Policy.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(HwsearchError, match="not valid JSON"):
        Policy.load(bad)
