"""Orchestration: the command line (and, later, Prefect flows and Ray fan-out)."""
