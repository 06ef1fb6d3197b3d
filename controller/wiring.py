"""Builds the checkers the reconciler runs, from the modules that implement them."""

from __future__ import annotations

from controller.kube import Kube
from controller.reconcile import Checkers


def build_checkers(*, kube: Kube) -> Checkers:
    return Checkers()
