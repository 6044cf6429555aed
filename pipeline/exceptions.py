"""Why a worker stops on its own. Each carries the exit code the CLI returns.

Only the infrastructure ends a worker; a bad input never does (it becomes a dead
letter). Exit codes: 0 clean stop (SIGTERM/SIGINT), 1 a bug in the worker (traceback),
2 bad configuration or model file, 3 broker unreachable past the deadline,
4 authentication or authorization refused, 5 the cluster changed under the worker.
"""

from __future__ import annotations

from pipeline.outage import describe


class ModelError(Exception):
    """A model could not be loaded or returned something unusable. Names model and problem."""


class WorkerExit(Exception):
    """The worker cannot go on; ``exit_code`` says why to whoever runs it."""

    exit_code = 1


class BrokerUnavailable(WorkerExit):
    exit_code = 3

    def __init__(self, seconds: float, cause: BaseException | None) -> None:
        last = describe(cause) if cause is not None else "none"
        super().__init__(f"the Kafka cluster has been unreachable for {seconds:.0f}s (last error: {last}); giving up")
        self.seconds = seconds


class KafkaAccessDenied(WorkerExit):
    exit_code = 4

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"Kafka refused this worker's credentials or permissions: {describe(cause)}")


class ClusterChanged(WorkerExit):
    exit_code = 5

    def __init__(self, expected: str, found: str) -> None:
        super().__init__(
            f"the Kafka cluster id changed from {expected!r} to {found!r}: refusing to commit offsets "
            "read from one cluster into another (restart the worker to start on the new cluster)"
        )
        self.expected = expected
        self.found = found
