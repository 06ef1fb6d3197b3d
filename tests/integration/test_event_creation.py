"""Events created through the controller's real `Kube` against the real API server: every recorded
time is accepted (a whole-second one too), and core/v1 readers (`kubectl get events`, the CLI)
see what was written."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from kubernetes import client

from controller.kube import Kube, ObjectRef

pytestmark = pytest.mark.integration


def about(namespace: str) -> ObjectRef:
    return ObjectRef(
        api_version="modelrollouts.io/v1alpha1", kind="ModelRollout", namespace=namespace, name="iris", uid="uid-1"
    )


@pytest.mark.parametrize("microsecond", [0, 123_456], ids=["whole second", "fraction"])
def test_an_event_at_any_recorded_time_is_created_and_read_back_by_core_readers(
    kube_api: client.ApiClient, namespace: str, microsecond: int
) -> None:
    # Given a time as the status records it, to the millisecond (a whole second one time in 1000)
    moment = datetime(2026, 11, 30, 17, 22, 37, microsecond, tzinfo=UTC)
    kube = Kube(api_client=kube_api, component="model-rollouts", instance="replica-a")

    # When the controller creates the Event under its recorded name
    created = kube.emit_event(
        about=about(namespace), type="Normal", reason="StepCompleted", message="step 1 completed", now=moment,
        name="iris.0123456789abcdef",
    )  # fmt: skip

    # Then it exists, and a core/v1 reader sees its object, reason, message, time and reporter
    assert created
    event = client.CoreV1Api(kube_api).read_namespaced_event("iris.0123456789abcdef", namespace)
    assert (event.involved_object.kind, event.involved_object.name) == ("ModelRollout", "iris")
    assert (event.type, event.reason, event.message) == ("Normal", "StepCompleted", "step 1 completed")
    assert event.event_time == moment
    assert (event.reporting_component, event.reporting_instance) == ("model-rollouts", "replica-a")


def test_an_event_created_again_under_its_name_counts_as_created_and_stays_one(
    kube_api: client.ApiClient, namespace: str
) -> None:
    kube = Kube(api_client=kube_api)
    moment = datetime(2026, 11, 30, 17, 22, 37, tzinfo=UTC)

    def emit() -> bool:
        return kube.emit_event(
            about=about(namespace),
            type="Normal",
            reason="Promoted",
            message="v2 promoted",
            now=moment,
            name="iris.same",
        )

    # When a restarted controller sends an Event its predecessor already created
    first, again = emit(), emit()

    # Then both count as created, and there is one Event
    assert first and again
    listed = client.CoreV1Api(kube_api).list_namespaced_event(namespace).items
    assert [e.metadata.name for e in listed] == ["iris.same"]
