"""The periodic resync brings back every known rollout once per period, spread over the period:
never a burst that queues thousands of passes ahead of the timers and measurements due."""

from __future__ import annotations

import threading
import time

from kubernetes import client

from controller.kube import Kube
from controller.manager import Manager, ManagerSettings
from controller.reconcile import Reconciler
from controller.workqueue import Cause


def test_the_resync_adds_every_rollout_once_per_period_spread_evenly_not_all_at_once() -> None:
    # given a manager knowing 4 rollouts, resyncing every second, and no worker taking keys
    api = client.ApiClient()
    settings = ManagerSettings(resync_seconds=1.0)
    m = Manager(api_client=api, reconciler=Reconciler(kube=Kube(api_client=api)), settings=settings)
    m._on_rollout_list(
        [{"metadata": {"namespace": "ns", "name": f"r{i}", "resourceVersion": "1"}, "spec": {}} for i in range(4)]
    )
    for _ in range(4):  # the list's own adds, handed out so that only the resync's remain
        m.queue.done(m.queue.get())
    stop = threading.Event()
    resync = threading.Thread(target=m._resync, args=(stop,), daemon=True)

    # when the resync runs for a little more than one period
    started = time.monotonic()
    resync.start()
    seen: list[tuple[float, int]] = []
    while time.monotonic() - started < 1.15:
        seen.append((time.monotonic() - started, len(m.queue)))
        time.sleep(0.02)
    stop.set()
    resync.join(timeout=2)

    # then the adds came one by one, a quarter period apart, and all four came within the period
    early = max(count for moment, count in seen if moment < 0.2)
    half = max(count for moment, count in seen if moment < 0.55)
    assert early == 0, f"{early} keys were added in the first fifth of the period"
    assert 1 <= half <= 2, f"{half} keys were added by the middle of the period, not about half"
    assert seen[-1][1] == 4
    assert not resync.is_alive()
    # and their passes are told apart from the passes that carry news
    assert m.queue.take().cause == Cause.RESYNC
