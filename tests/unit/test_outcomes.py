from __future__ import annotations

import math

import numpy as np

from pipeline.outcomes import invalid_output


def test_a_row_without_a_declared_field_is_invalid_output_naming_it() -> None:
    problem = invalid_output({"probability": 0.4}, ("score",))
    assert problem is not None and "lacks ['score']" in problem and "probability" in problem


def test_non_finite_numbers_anywhere_in_a_row_are_invalid_output_with_their_path() -> None:
    assert invalid_output({"score": math.nan}, ("score",)) == "outputs.score is nan, not a finite number"
    deep = {"labels": [{"label": "cat", "prob": 0.9}, {"label": "dog", "prob": -math.inf}]}
    assert invalid_output(deep, ("labels",)) == "outputs.labels[1].prob is -inf, not a finite number"
    assert invalid_output({"score": np.float32("nan")}, ("score",)) is not None


def test_valid_rows_pass_and_integers_or_booleans_are_not_checked_for_finiteness() -> None:
    assert invalid_output({"score": 0.25, "flag": True, "count": 2**70, "name": "x"}, ("score",)) is None
    assert invalid_output([0.1], ()) == "output row is a list, not a dict"
