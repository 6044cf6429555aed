from __future__ import annotations

import math

import numpy as np
import pytest

from consumers.source import InputRecord, Record
from pipeline.outcomes import Outcome, Outcomes, invalid_output
from pipeline.runner import Outcome as Inference
from schemas.codec import JSON, MSGPACK, Limits, decode_result
from schemas.errors import DecodeError, Reason
from schemas.models import Frame, FrameEncoding, Transaction


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


# -- a batch's results in one loop (Outcomes.results) against one at a time (Outcomes.result)

_TRACEPARENT = ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")


def _outcomes(content_type: str = MSGPACK) -> Outcomes:
    return Outcomes(results_topic="out", dead_letter_topic="dlq", worker_id="w-1", content_type=content_type,
                    limits=Limits())


def _tx(i: int) -> Transaction:
    return Transaction(id=f"tx-{i}", account_id="acct-1", timestamp_ms=1_700_000_000_000 + i, amount=12.5,
                       currency="EUR")


def _frame(i: int) -> Frame:
    return Frame(stream_id="cam-1", seq=i, captured_at_ms=1_700_000_000_000 + i, encoding=FrameEncoding.JPEG,
                 width=2, height=2, data=b"\xff\xd8")


def _inference(outputs: object = None, error: DecodeError | None = None,
               fields: tuple[str, ...] = ("score",)) -> Inference:
    return Inference(outputs, error, "m", "1", inference_start_ms=10, inference_end_ms=11,  # type: ignore[arg-type]
                     output_fields=fields)


_CASES: list[tuple[str, bytes | None, tuple[tuple[str, bytes], ...], Frame | Transaction, Inference]] = [
    ("usual", b"acct-1", (), _tx(0), _inference({"score": 0.25})),
    ("no key", None, (), _tx(1), _inference({"score": 0.5, "flag": True, "n": 3, "label": None})),
    ("frame", b"cam-1", (), _frame(2), _inference({"labels": [{"label": "cat", "score": 0.9}]}, fields=("labels",))),
    ("model error", b"k", (), _tx(3), _inference(error=DecodeError(Reason.PREPROCESS_FAILED, "bad row"))),
    ("not finite", b"k", (), _tx(4), _inference({"score": math.nan})),
    ("field missing", b"k", (), _tx(5), _inference({"probability": 0.1})),
    ("not a dict", b"k", (), _tx(6), _inference([0.1])),
    ("numpy scalar", b"k", (), _tx(7), _inference({"score": np.float64(0.75)})),
    ("unencodable", b"k", (), _tx(8), _inference({"score": 0.1, "extra": object()})),
    ("too large an int", b"k", (), _tx(9), _inference({"score": 0.1, "n": 2**64})),
    ("traced", b"k", (_TRACEPARENT,), _tx(10), _inference({"score": 0.125})),
]


def _sources() -> list[InputRecord]:
    return [Record("in", 2, 100 + i, key, b"\x80", headers, 0) for i, (_, key, headers, _, _) in enumerate(_CASES)]


def _view(outcome: Outcome) -> tuple[object, ...]:
    # a trace header's span id is drawn per outcome: its name is compared, not its value
    headers = tuple((name, b"" if name == "traceparent" else value) for name, value in outcome.record.headers)
    return (outcome.source, outcome.reason, outcome.record.topic, outcome.record.value, outcome.record.key, headers)


@pytest.mark.parametrize("content_type", [MSGPACK, JSON])
def test_a_batch_s_results_are_what_one_result_at_a_time_builds(content_type: str) -> None:
    outcomes, sources = _outcomes(content_type), _sources()
    events = [event for *_, event, _ in _CASES]
    inferences = [inference for *_, inference in _CASES]
    received = [1_700_000_000_500 + i for i in range(len(_CASES))]
    batch = outcomes.results(sources, events, inferences, received, closed_ms=7, produced_ms=9, batch_size=11)
    one_by_one = [outcomes.result(s, e, inf, received_ms=r, closed_ms=7, produced_ms=9, batch_size=11)
                  for s, e, inf, r in zip(sources, events, inferences, received, strict=True)]
    assert [_view(o) for o in batch] == [_view(o) for o in one_by_one]
    reasons = {name: o.reason for (name, *_), o in zip(_CASES, batch, strict=True)}
    assert reasons == {
        "usual": None, "no key": None, "frame": None, "model error": Reason.PREPROCESS_FAILED,
        "not finite": Reason.INVALID_OUTPUT, "field missing": Reason.INVALID_OUTPUT,
        "not a dict": Reason.INVALID_OUTPUT,
        "numpy scalar": None, "unencodable": Reason.RESULT_ENCODING_FAILED,
        "too large an int": Reason.RESULT_ENCODING_FAILED if content_type == MSGPACK else None, "traced": None,
    }
    usual = decode_result(batch[0].record.value, batch[0].record.headers)
    assert (usual.key, usual.input.offset, usual.event_id, usual.outputs, usual.batch_size, usual.worker_id) == (
        "acct-1", 100, "tx-0", {"score": 0.25}, 11, "w-1")
    assert (usual.timings.event_ms, usual.timings.received_ms, usual.timings.batch_closed_ms,
            usual.timings.inference_start_ms, usual.timings.produced_ms) == (
        1_700_000_000_000, 1_700_000_000_500, 7, 10, 9)
    assert decode_result(batch[2].record.value, batch[2].record.headers).event_id == "cam-1/2"
    assert [name for name, _ in batch[-1].record.headers] == ["content-type", "traceparent"]
