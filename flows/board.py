"""The progress board: the latest step, loss and ETA of each training, reported by the Ray
workers and read by the driver (:func:`genzoo.flows.cluster.progress_board` makes it a Ray
actor). It lives in a module of its own that imports nothing heavy: the actor's process
imports only this, not torch (about 1.2 s of CPU and 250 MB of memory it would hold for the
whole run, on the node running the driver)."""

from __future__ import annotations

from typing import Any


class ProgressBoard:
    """The latest progress row of each family."""

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, Any]] = {}

    def report(self, family: str, row: dict[str, Any]) -> None:
        self._rows[family] = row

    def read(self, family: str) -> dict[str, Any] | None:
        return self._rows.get(family)
