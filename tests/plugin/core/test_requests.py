import pytest

from toplens import EditRequest, RequestError


def test_valid_request_fills_prompt():
    r = EditRequest("The mother tongue of {} is", "Danielle Darrieux", " English", " French")
    assert r.text == "The mother tongue of Danielle Darrieux is"
    assert EditRequest.from_dict(r.to_dict()) == r


@pytest.mark.parametrize(
    "kwargs, field, value",
    [
        (dict(prompt="The mother tongue of X is"), "prompt", "found 0"),
        (dict(prompt="{} and {} speak"), "prompt", "found 2"),
        (dict(target_new=""), "target_new", "''"),
        (dict(target_new="   "), "target_new", "'   '"),
        (dict(subject=" "), "subject", "' '"),
        (dict(target_true=" English"), "target_new", "' English'"),
    ],
)
def test_bad_request_names_field_and_value(kwargs, field, value):
    base = dict(prompt="The mother tongue of {} is", subject="Danielle Darrieux", target_new=" English")
    with pytest.raises(RequestError) as err:
        EditRequest(**{**base, **kwargs})
    assert f"EditRequest.{field}" in str(err.value) and value in str(err.value)


def test_from_counterfact_adds_leading_space():
    r = EditRequest.from_counterfact({"prompt": "{} plays", "subject": "Miles Davis",
                                      "target_new": {"str": "piano"}, "target_true": {"str": "trumpet"}})
    assert r.target_new == " piano" and r.target_true == " trumpet"
    with pytest.raises(RequestError, match="subject"):
        EditRequest.from_counterfact({"prompt": "{} plays", "target_new": {"str": "x"}})
