"""Orchestration: the Prefect flows (`pipeline`), the Ray fan-out (`cluster`), the Prefect UI's
deployments (`serve`) and the `genzoo` command line (`cli`)."""
