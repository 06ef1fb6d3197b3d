"""The demo, end to end, as `make demo` runs it: a real control plane with KWOK, real model
servers, Contour + Envoy splitting by the HTTPRoute, Prometheus, the controller and labelled traffic.

Given the sandbox, when the demo rolls out a better model (v2, shadowed first), then a model that
is better on average but broken on the 'borderline' slice (v3, as a plain canary), then a model
served without its scaler (v4, shadowed first), then a good model (v5) with a rollback window
whose servers are made to fail after its promotion, then v2 answers mirrored copies while no client
gets its answers and is promoted with no evidence of harm on any metric, v3 is rolled back in its
first analyze step by the borderline slice's evidence, v4 is rolled back during its shadow step
having answered mirrored copies but not one client, v5 is promoted and then undone back to v2 by
the real alert (Prometheus' rule over the servers' own metrics, through a real Alertmanager), each
loser's Deployment is scaled to zero with its Pods gone, and a picture is saved per rollout.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DemoRun = tuple[subprocess.CompletedProcess[str], dict[str, Any]]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    out = tmp_path_factory.mktemp("demo")
    finished = subprocess.run(
        [sys.executable, "-m", "sandbox.demo", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    summary_file = out / "summary.json"
    assert summary_file.exists(), f"no summary; demo output:\n{finished.stdout}\n{finished.stderr}"
    return finished, json.loads(summary_file.read_text())


def test_the_demo_exits_zero_and_reports_every_rollout(demo_run: DemoRun) -> None:
    finished, summary = demo_run
    assert finished.returncode == 0, f"{finished.stdout}\n{finished.stderr}"
    assert "ok   v1 -> v2 (good candidate): Promoted" in finished.stdout
    assert "ok   v2 -> v3 (bad candidate): RolledBack, caught by" in finished.stdout
    assert "ok   v2 -> v4 (bad candidate, shadowed): RolledBack, caught by" in finished.stdout
    assert "during its shadow step" in finished.stdout
    assert "answers from v4 that reached a client: 0 -- as expected" in finished.stdout
    assert (
        "ok   v2 -> v5 (good candidate, then an incident): RolledBack, promoted then undone by alert "
        "ModelErrorRate, v2 at 100% on the route" in finished.stdout
    )
    assert [r["as_expected"] for r in summary["rollouts"]] == [True, True, True, True]
    assert re.search(r"^total \d+s$", finished.stdout, re.MULTILINE), "the demo prints its total time"
    # and prints the evidence: at the promotion per metric, at the rollback the deciding slice's
    assert "evidence at each metric's last look" in finished.stdout
    assert "borderline-accuracy: slice borderline samples v2 " in finished.stdout
    assert "slice borderline (Failed" in finished.stdout
    assert ">= threshold 60" in finished.stdout, "a third of the 5 % budget: 1 / (0.05 / 3)"
    # and the incident: the fault, the rule firing in Prometheus, the alert with its labels, the undo
    assert "fault on: v5's server fails 30% of its inference requests" in finished.stdout
    assert "Prometheus: alert ModelErrorRate firing for v5" in finished.stdout
    assert re.search(r'alert ModelErrorRate \{.*namespace="models".*version="v5"\} fired at ', finished.stdout)
    assert re.search(r"undo Done at \S+, [\d.]+s after the alert fired: v5 -> v2", finished.stdout)
    assert re.search(r"route breast-cancer: (v1 0%, )?v2 100%, v5 0%;", finished.stdout)


def test_the_good_candidate_is_promoted_and_the_old_version_scaled_down(
    demo_run: DemoRun,
) -> None:
    good = demo_run[1]["rollouts"][0]
    assert (good["baseline"], good["candidate"], good["phase"]) == ("v1", "v2", "Promoted")
    assert good["shadow"]
    assert good["caught_by"] is None
    assert good["scaled_down"] == "v1"
    assert [weight for _, weight in good["weights"]][-1] == 100
    # and every metric's evidence stayed below its threshold, on samples of both versions
    assert good["false_rollback_rate"] == 0.05
    assert sorted(good["evidence"]) == ["accuracy", "borderline-accuracy", "error-rate"]
    comparisons = [*(good["evidence"][m] for m in ("accuracy", "error-rate")),
                   *good["evidence"]["borderline-accuracy"]["slices"]]  # fmt: skip
    for figures in comparisons:
        assert figures["eValue"] < figures["threshold"] == 60, figures
        assert figures["candidate"]["samples"] > 0 and figures["baseline"]["samples"] > 0
        assert "smallestDetectableRatio" in figures


def test_the_bad_candidate_is_rolled_back_by_a_failed_measurement(
    demo_run: DemoRun,
) -> None:
    bad = demo_run[1]["rollouts"][1]
    assert (bad["baseline"], bad["candidate"], bad["phase"]) == ("v2", "v3", "RolledBack")
    caught = bad["caught_by"]
    # The slice check decides (the overall accuracy guard tolerates v3's two points), v3 measured worse
    assert caught["metric"] == "borderline-accuracy"
    assert caught["candidateValue"] < caught["baselineValue"]
    # with the deciding look's evidence: the slice's samples, its ratio of wrong answers wholly
    # beyond the tolerated one, the evidence past its threshold
    assert caught["evidence"]["look"] >= 1 and caught["reason"].startswith(f"look {caught['evidence']['look']}: ")
    (borderline,) = caught["evidence"]["slices"]
    assert (borderline["slice"], borderline["verdict"]) == ("borderline", "Failed")
    assert borderline["eValue"] >= borderline["threshold"] == 60
    assert borderline["interval"][0] > borderline["nullRatio"]
    assert borderline["candidate"]["samples"] > 0 and borderline["baseline"]["samples"] > 0
    assert bad["scaled_down"] == "v3"
    assert max(weight for _, weight in bad["weights"]) == 50, "never went past the first analysis step"
    assert bad["weights"][-1][1] == 0


def test_the_good_candidate_answered_mirrored_copies_in_its_shadow_step_and_no_client(demo_run: DemoRun) -> None:
    good = demo_run[1]["rollouts"][0]
    # The demo's samples of the shadow step: status shows the route copying every request to v2
    mirrored = [s for s in good["samples"] if s["mirror_percent"] > 0]
    assert {s["mirror_percent"] for s in mirrored} == {100}
    assert mirrored[-1]["seconds"] - mirrored[0]["seconds"] >= 15, "a 20 s step, sampled each second"
    assert {s["weight"] for s in mirrored} == {0}
    # v2's server answered copies all along while the clients' answer count from v2 stood still
    # (the last sample left out: the next pass may move the weight between its two reads)
    shadow = mirrored[:-1]
    assert shadow[-1]["candidate_requests"] - shadow[0]["candidate_requests"] > 500
    assert shadow[-1]["client_answers_by_candidate"] == shadow[0]["client_answers_by_candidate"] == 0
    assert shadow[-1]["client_answers"] - shadow[0]["client_answers"] > 500
    # and the mirror was removed before v2 was given any weight
    first_weighted = next(s for s in good["samples"] if s["weight"] > 0)
    assert first_weighted["mirror_percent"] == 0 and first_weighted["seconds"] > mirrored[-1]["seconds"]


def test_the_bad_candidate_on_a_plain_canary_never_had_a_mirror(demo_run: DemoRun) -> None:
    bad = demo_run[1]["rollouts"][1]
    assert not bad["shadow"] and bad["decided_in_step"] == "analyze"
    assert {s["mirror_percent"] for s in bad["samples"]} == {0}


def test_a_candidate_wrong_on_the_mirrored_requests_is_rolled_back_in_its_shadow_before_any_client_saw_it(
    demo_run: DemoRun,
) -> None:
    shadowed = demo_run[1]["rollouts"][2]
    assert (shadowed["baseline"], shadowed["candidate"], shadowed["phase"]) == ("v2", "v4", "RolledBack")
    # caught during the mirror step, at weight 0 all along, by a failed measurement on the copies
    assert shadowed["decided_in_step"] == "mirror"
    assert {weight for _, weight in shadowed["weights"]} == {0}
    caught = shadowed["caught_by"]
    assert caught["candidateValue"] < caught["baselineValue"], caught
    # v4's server answered the mirrored copies, and not one of the clients' answers came from it
    assert shadowed["client_answers"].get("v4", 0) == 0
    assert shadowed["client_answers"]["v2"] > 100
    assert shadowed["mirrored_copies"] > 100
    assert shadowed["mirrored_copies"] == shadowed["candidate_requests"]
    # and it is gone: scaled to zero
    assert shadowed["scaled_down"] == "v4"


def test_given_v5_promoted_when_its_servers_fail_then_the_alert_from_prometheus_undoes_the_promotion(
    demo_run: DemoRun,
) -> None:
    undone = demo_run[1]["rollouts"][3]
    incident = undone["incident"]
    assert (undone["baseline"], undone["candidate"], undone["phase"]) == ("v2", "v5", "RolledBack")
    # v5 was promoted first: all traffic on it, no measurement failed
    assert undone["caught_by"] is None
    assert 100 in [weight for _, weight in undone["weights"]]
    # then, in this order: the fault, the rule holding, the alert firing, the undo done
    assert undone["promoted_seconds"] < incident["fault_on_seconds"] < incident["pending_seconds"]
    assert incident["pending_seconds"] < incident["firing_seconds"] <= incident["undone_seconds"]
    assert incident["firing_seconds"] - incident["pending_seconds"] >= 4, "the rule's `for: 5s`"
    assert incident["undone_seconds"] - incident["firing_seconds"] < 5
    # status.undo names the alert as its cause; status.incident is the alert Alertmanager delivered
    undo = incident["undo"]
    assert (undo["state"], undo["fromVersion"], undo["toVersion"]) == ("Done", "v5", "v2")
    assert "alert ModelErrorRate" in undo["cause"] and "rollbackWindow" in undo["cause"]
    alert = incident["alert"]
    assert alert["response"] == "Undone"
    assert alert["labels"] == {
        "alertname": "ModelErrorRate",
        "namespace": "models",
        "model": "breast-cancer",
        "version": "v5",
        "severity": "page",
    }
    assert alert["summary"].startswith("breast-cancer v5 fails "), "the rule's annotation, from Prometheus"
    # and the undone v5 is gone: scaled to zero
    assert undone["scaled_down"] == "v5"
    assert undone["weights"][-1][1] == 0


def test_given_the_undo_then_the_route_sends_all_traffic_to_v2_which_had_its_replicas_all_along(
    demo_run: DemoRun,
) -> None:
    incident = demo_run[1]["rollouts"][3]["incident"]
    assert incident["route_weights"]["v2"] == 100
    assert incident["route_weights"].get("v5", 0) == 0
    # v2 kept its replicas through the rollback window: available from the fault until traffic moved
    replicas = incident["previous_replicas"]
    assert replicas and replicas[0][0] <= incident["firing_seconds"]
    assert {available for _, available in replicas} == {2}


def test_given_the_fault_then_clients_saw_errors_only_until_the_undo_and_no_v5_answer_after_it(
    demo_run: DemoRun,
) -> None:
    undone = demo_run[1]["rollouts"][3]
    incident = undone["incident"]
    assert undone["client_failures"]["infer HTTP 500"] > 20, "30 % of up to 100 requests/s for about 10 s"
    assert undone["client_answers"]["v2"] > 100 and undone["client_answers"]["v5"] > 300
    # from a second after the undo, the clients' count of v5 answers stands still
    after = [s for s in undone["samples"] if s["seconds"] > incident["undone_seconds"] + 1]
    assert len(after) >= 5, "sampled while v5 was being scaled down"
    assert after[0]["client_answers_by_candidate"] == after[-1]["client_answers_by_candidate"]
    assert after[-1]["client_answers"] - after[0]["client_answers"] > 100


def test_a_picture_is_saved_per_rollout(demo_run: DemoRun) -> None:
    pictures = [Path(r["picture"]) for r in demo_run[1]["rollouts"]]
    assert [p.name for p in pictures] == [
        "rollout-v1-to-v2.png",
        "rollout-v2-to-v3.png",
        "rollout-v2-to-v4.png",
        "rollout-v2-to-v5.png",
    ]
    for picture in pictures:
        assert picture.read_bytes()[:8] == PNG_SIGNATURE
        assert picture.stat().st_size > 20_000, "a plot with data, not an empty canvas"
