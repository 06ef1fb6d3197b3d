"""The detail rows a check writes for kubectl: few and short, since they live in the rollout's status."""

from __future__ import annotations

from typing import Any

from controller.analysis.modelchecks.slices import with_slice_rows
from controller.analysis.rows import MAX_ROWS, Row, measured_summary, with_rows


def slice_summary(e_values: list[float]) -> dict[str, Any]:
    slices = [
        {"slice": f"s{i}", "verdict": "Successful", "eValue": e, "threshold": 80.0,
         "candidate": {"samples": 100, "value": 0.9}, "baseline": {"samples": 100, "value": 0.9}}
        for i, e in enumerate(e_values)
    ]  # fmt: skip
    return {"test": "slices", "worstSlice": "s0", "slices": slices}


def test_a_look_keeps_the_rows_of_its_worst_slices_only_in_the_order_they_were_given() -> None:
    # given twelve slices, s3 and s11 the least worrying
    e_values = [5.0, 4.0, 3.0, 0.1, 9.0, 8.0, 7.0, 6.0, 2.0, 1.0, 1.5, 0.2]

    # when the slices check writes its rows
    summary = with_slice_rows(slice_summary(e_values))

    # then ten rows are kept, without the two least worrying slices, in the slices' order
    assert MAX_ROWS == 10
    assert [row["label"] for row in summary["rows"]] == [f"slice s{i}" for i in range(12) if i not in (3, 11)]


def test_a_row_keeps_only_the_cells_given_and_a_measurement_keeps_the_metrics_row_but_not_the_details() -> None:
    summary = with_rows({"look": 3, "verdict": "Failed"}, columns=Row(estimate="x"), rows=[Row(label="d", tones={})])
    assert summary["columns"] == {"estimate": "x"} and summary["rows"] == [{"label": "d"}]
    assert measured_summary(summary) == {"look": 3, "columns": {"estimate": "x"}}
