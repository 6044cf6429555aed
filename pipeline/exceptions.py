"""Why a worker stops on its own. Each carries the exit code the CLI returns.

Only the infrastructure ends a worker; a bad input never does (it becomes a dead
letter). Exit codes: 0 clean stop (SIGTERM/SIGINT), 1 a bug in the worker (traceback),
2 bad configuration or model file, 3 broker unreachable past the deadline,
4 authentication or authorization refused (or the broker's certificate untrusted),
5 the cluster changed under the worker, 6 the accelerator failed (its context unusable).
"""

from __future__ import annotations

from pipeline.outage import describe


class ConfigurationError(Exception):
    """A setting that cannot work (a topic that does not exist, a missing extra): exit 2."""


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
        super().__init__(f"Kafka refused the credentials or permissions: {describe(cause)}")


class KafkaNotTrusted(WorkerExit):
    """The broker's TLS certificate did not verify (or TLS failed to start): exit 4 as well."""

    exit_code = 4

    def __init__(self, broker: str, cause: BaseException) -> None:
        super().__init__(
            f"TLS to Kafka at {broker} failed: {getattr(cause, 'verify_message', None) or cause} "
            "(is the CA that signed the broker's certificate in ssl_cafile, and is the listener SSL?)"
        )


class ClusterChanged(WorkerExit):
    exit_code = 5

    def __init__(self, expected: str, found: str) -> None:
        super().__init__(
            f"the Kafka cluster id changed from {expected!r} to {found!r}: refusing to commit offsets "
            "read from one cluster into another (restart the worker to start on the new cluster)"
        )
        self.expected = expected
        self.found = found


class DeviceFailed(WorkerExit):
    """The model's device failed in a way that leaves it unusable for this process (a CUDA
    error: an illegal memory access, a device-side assert): every later batch would fail
    too, and bisecting the batch cannot find a guilty item on a device that runs nothing.
    The worker stops without committing the batch, so its records are read again by the
    worker that takes the partitions over, or by this one restarted with a fresh context."""

    exit_code = 6

    def __init__(self, model_name: str, cause: BaseException) -> None:
        super().__init__(f"the device failed under model {model_name!r}, and a failed device runs nothing more "
                         f"in this process: {describe(cause)} (the batch is not committed; a restart replays it)")
