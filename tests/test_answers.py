import pytest

from ftlab.training.answers import exact_match, exact_match_rate, normalize_answer


@pytest.mark.parametrize("pred,ref", [
    ("230.00 EUR", "230.00 eur"), ("$1,284.50.", "1284.50"), ("2024-03-15\nThe date is", "2024-03-15"),
    ("  15.00%  ", "15.00%"), ("€ 1,000,000.00", "1000000.00"), ("\n\n-12.50%", "-12.50%"),
])
def test_equal_after_normalization(pred, ref):
    assert exact_match(pred, ref)


@pytest.mark.parametrize("pred,ref", [
    ("15%", "15.00%"), ("230.01 EUR", "230.00 EUR"), ("1284.5", "1284.50"), ("2024-3-15", "2024-03-15"),
    ("230.00", "230.00 EUR"), ("12.50%", "-12.50%"), ("", "1.00"), ("The answer is 1.00", "1.00"),
])
def test_different_answers_stay_different(pred, ref):
    assert not exact_match(pred, ref)


def test_normalize_keeps_decimal_commas_that_are_not_thousands():
    assert normalize_answer("1,5") == "1,5"
    assert normalize_answer("1,284,000.10") == "1284000.10"


def test_rate():
    assert exact_match_rate(["1.00", "2.00", "x"], ["1.00", "2", "x"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        exact_match_rate(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one"):
        exact_match_rate([], [])
