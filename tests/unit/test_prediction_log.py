"""The local model servers' prediction log (docs/model-metrics.md, "The prediction log"): what a
server keeps of each answer, by which id, and how a reader pages through it. Pure."""

from __future__ import annotations

import math

from localenv.modelserver.predictionlog import PredictionLog, request_id


def test_the_gateways_request_id_wins_over_the_bodys_so_a_mirrored_copy_pairs_with_its_original() -> None:
    assert request_id(headers={"x-request-id": "9d1f-envoy"}, body_id="client-7") == "9d1f-envoy"
    assert request_id(headers={}, body_id="client-7") == "client-7"


def test_each_row_is_logged_under_its_request_with_a_non_finite_score_as_none() -> None:
    log = PredictionLog()

    log.record(request_id="r1", time=10.0, labels=[1], scores=[0.9])
    log.record(request_id="batch", time=11.0, labels=[0, 1], scores=[0.1, math.nan])

    rows, truncated = log.since(0)
    assert [(r.request_id, r.row, r.label, r.score) for r in rows] == [
        ("r1", 0, 1, 0.9),
        ("batch", 0, 0, 0.1),
        ("batch", 1, 1, None),
    ]
    assert not truncated
    assert rows[2].as_json() == {"requestId": "batch", "row": 1, "time": 11.0, "label": 1, "score": None}


def test_a_reader_gets_the_rows_since_a_moment_a_page_at_a_time() -> None:
    log = PredictionLog()
    for second in range(10):
        log.record(request_id=f"r{second}", time=100.0 + second, labels=[1], scores=[0.5])

    page, truncated = log.since(104.0, limit=3)

    assert [r.request_id for r in page] == ["r4", "r5", "r6"] and truncated
    rest, truncated = log.since(page[-1].time, limit=10)
    assert [r.request_id for r in rest] == ["r6", "r7", "r8", "r9"] and not truncated


def test_only_the_newest_rows_are_kept() -> None:
    log = PredictionLog(kept=3)
    for second in range(5):
        log.record(request_id=f"r{second}", time=float(second), labels=[1], scores=[0.5])

    assert [r.request_id for r in log.since(0)[0]] == ["r2", "r3", "r4"]
