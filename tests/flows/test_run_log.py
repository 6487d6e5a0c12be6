"""genzoo's own log lines (``genzoo.*``) reach a flow run's Prefect log, the UI's: a served
deployment's reached only the `genzoo serve` console."""

import logging
import threading

from prefect import flow, get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogHandler
from prefect.runtime import flow_run

from genzoo.flows.pipeline import genzoo_lines_in_run_log


@flow
def _logs_a_line() -> str:
    with genzoo_lines_in_run_log():
        logging.getLogger("genzoo.cluster").info("joined Ray cluster at 10.0.0.1:6379")
        logging.getLogger("genzoo.cluster").debug("a debug line stays out")
        logging.getLogger("genzoo.prepare").info("prepared digits")  # the stage's run logger says it: once
        with genzoo_lines_in_run_log():  # a flow called by another: one handler, one line
            logging.getLogger("genzoo.augment").warning("vae: stale; the dataset is drawn from it as it is")
        outside = threading.Thread(target=lambda: logging.getLogger("genzoo.board").warning("no run context"))
        outside.start()
        outside.join()
    return flow_run.id


def test_genzoo_lines_reach_the_flow_runs_log(recwarn):
    """As a deployment's process has it (no level set on genzoo's loggers): the lines `genzoo run`
    shows, warnings and where the families run, reach the run's log, once."""
    logger = logging.getLogger("genzoo")
    logger.setLevel(logging.NOTSET)
    logging.getLogger("genzoo.cluster").setLevel(logging.NOTSET)
    level, handlers = logger.level, list(logger.handlers)
    run_id = _logs_a_line()
    APILogHandler().flush()  # the log worker sends in batches: all of them now
    with get_client(sync_client=True) as c:
        logs = c.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    ours = [(log.name, log.message) for log in logs if log.name.startswith("genzoo")]
    assert ours == [
        ("genzoo.cluster", "joined Ray cluster at 10.0.0.1:6379"),
        ("genzoo.augment", "vae: stale; the dataset is drawn from it as it is"),
    ]
    assert not [w for w in recwarn if "without a flow run id" in str(w.message)]  # the thread's line
    assert (logger.level, logger.handlers) == (level, handlers)  # as it was after the run
