"""Settings, built once in ``main`` and passed down. Env prefix ``STREAMINFER_``."""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.codec import JSON, MSGPACK, Limits

if TYPE_CHECKING:
    from pipeline.acceleration import Acceleration

DEFAULT_FRAMES_TOPIC = "streaminfer-frames"
DEFAULT_TRANSACTIONS_TOPIC = "streaminfer-transactions"
DEFAULT_RESULTS_TOPIC = "streaminfer-results"
DEFAULT_DEAD_LETTER_TOPIC = "streaminfer-dead-letters"
DEFAULT_TOPICS = (DEFAULT_FRAMES_TOPIC, DEFAULT_TRANSACTIONS_TOPIC, DEFAULT_RESULTS_TOPIC, DEFAULT_DEAD_LETTER_TOPIC)
_MODEL_SPEC = "builtin:NAME | torchscript:PATH | export:PATH.pt2 | python:MODULE:FACTORY | none"


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMINFER_", frozen=True, extra="ignore")

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="host:port[,host:port...]")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = Field(
        None, description="PEM file of the CA(s) that signed the brokers' certificates (SSL, SASL_SSL); "
        "default: the system's trusted CAs",
    )
    ssl_certfile: Path | None = Field(None, description="PEM client certificate, for brokers that require one (mTLS)")
    ssl_keyfile: Path | None = Field(None, description="PEM private key of ssl_certfile")
    ssl_check_hostname: bool = Field(True, description="check that a broker's certificate names the host dialled")
    _ssl: ssl.SSLContext | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _security_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_") and not self.sasl_mechanism:
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism "
                             "(PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")
        if self.sasl_mechanism and not (self.sasl_username and self.sasl_password):
            raise ValueError("sasl_mechanism needs sasl_username and sasl_password")
        if self.sasl_mechanism and not self.security_protocol.startswith("SASL_"):
            raise ValueError(f"sasl_mechanism is set but security_protocol is {self.security_protocol}: "
                             "use SASL_SSL (or SASL_PLAINTEXT)")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name} {path} is not a readable file")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together")
        # loaded once, here: files that are not PEM are a setting refused in one line, and
        # every client of the process shares the context
        self._ssl = self._load_ssl_context()
        return self

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of SSL and SASL_SSL connections (None for the plaintext ones)."""
        return self._ssl

    def _load_ssl_context(self) -> ssl.SSLContext | None:
        if not self.security_protocol.endswith("SSL"):
            return None
        from aiokafka.helpers import create_ssl_context  # here: the CLI's other commands start without aiokafka

        try:
            context = create_ssl_context(
                cafile=str(self.ssl_cafile) if self.ssl_cafile else None,
                certfile=str(self.ssl_certfile) if self.ssl_certfile else None,
                keyfile=str(self.ssl_keyfile) if self.ssl_keyfile else None,
            )
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"TLS settings do not load: {exc}") from None
        context.check_hostname = self.ssl_check_hostname
        return context

    def client_kwargs(self) -> dict[str, object]:
        kwargs: dict[str, object] = {
            "bootstrap_servers": self.kafka_bootstrap,
            "security_protocol": self.security_protocol,
        }
        if (context := self.ssl_context()) is not None:
            kwargs["ssl_context"] = context
        if self.sasl_mechanism:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return kwargs


class WorkerSettings(KafkaSettings):
    """Everything one worker process needs. Every field is also a ``streaminfer worker`` flag."""

    input_topics: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [DEFAULT_FRAMES_TOPIC, DEFAULT_TRANSACTIONS_TOPIC],
        description="comma-separated topics to consume",
    )
    results_topic: str = DEFAULT_RESULTS_TOPIC
    dead_letter_topic: str = DEFAULT_DEAD_LETTER_TOPIC
    group_id: str = "streaminfer-workers"
    worker_id: str = Field(default_factory=_default_worker_id)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    delivery: Literal["at-least-once", "exactly-once"] = Field(
        "at-least-once",
        description="exactly-once: results, dead letters and input offsets in one Kafka transaction per batch",
    )

    batching: Literal["adaptive", "fixed"] = Field(
        "adaptive",
        description="adaptive: a window closes as soon as its lane's model is free, and the batch size is "
        "capped at the size measured to be cheapest per item (under --latency-slo-ms); "
        "fixed: windows close only by size, bytes or max-wait",
    )
    max_batch_size: int = Field(1024, ge=1, le=4096, description="upper bound on a batch (adaptive: on its cap)")
    max_batch_bytes: int = Field(
        32 * 1024 * 1024, ge=1,
        description="upper bound on a batch's bytes: payloads, a frame counted decoded (width x height x channels)",
    )
    max_wait_ms: int = Field(
        20, ge=0, le=60_000, description="longest a window stays open after its first item"
    )
    latency_slo_ms: int = Field(
        0, ge=0, le=600_000,
        description="adaptive batching: no batch larger than what the model runs in half of this; 0: no SLO",
    )
    queued_batches: int = Field(2, ge=1, le=64, description="closed batches waiting for the model")
    commit_interval_ms: int = Field(
        200, ge=0, le=60_000, description="commit delivered offsets at most this often"
    )

    frame_model: str = Field("builtin:efficientnet-lite0", description=_MODEL_SPEC)
    transaction_model: str = Field("builtin:txn-mlp", description=_MODEL_SPEC)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    precision: Literal["fp32", "fp16", "bf16"] = Field(
        "fp32", description="the forward pass under autocast in this precision (fp16: CUDA only); results stay fp32"
    )
    channels_last: bool = Field(False, description="image batches and the model's weights in channels-last memory")
    compile: bool = Field(
        False, description="torch.compile the model (static shapes; batches padded to powers of two)"
    )
    graph: Literal["auto", "eager"] = Field(
        "auto", description="auto: on a CPU in fp32 without --compile, a built-in model runs as a frozen TorchScript "
        "graph optimised for inference (checked against the module at start-up; eager if it differs); eager: always "
        "the module as it is"
    )
    model_streams: int = Field(
        0, ge=0, le=256, description="model threads per lane, each running a batch of its own at once (results still "
        "go out in batch order); 0: a frame-only worker on a CPU runs one per CPU of its lane (with one intra-op "
        "thread each, unless --torch-threads says otherwise), any other worker one"
    )
    torch_threads: int = Field(
        0, ge=0, description="intra-op threads of each model thread; 0: a lane's CPUs shared by its model threads, a "
        "lane's CPUs being the CPUs less one (for the event loop, the preparation pool and a co-located broker) shared "
        "by the lanes, or every CPU for a single frame lane on 2 CPUs or fewer"
    )
    prepare_threads: int = Field(
        0, ge=0, le=64,
        description="threads that decode and preprocess frame batches ahead of the model (only while a CPU is left "
        "beside a lane's intra-op threads); 0: a quarter of the CPUs, 1 to 4",
    )

    producer_linger_ms: int = Field(
        2, ge=0, le=10_000,
        description="how long the results producer waits to fill a batch (Kafka's linger.ms): for records sent one "
        "at a time (exactly-once, resends); a batch's results go out at once, as full record batches",
    )
    producer_batch_bytes: int = Field(
        262_144, ge=1024, description="the results producer's batch size per partition (Kafka's batch.size)"
    )
    max_payload_bytes: int = Field(8 * 1024 * 1024, ge=1)
    max_prefetch_bytes: int = Field(
        16 * 1024 * 1024, ge=65_536,
        description="input bytes one fetch may bring ahead of the model (a larger single message still comes)",
    )
    max_frame_age_ms: int = Field(
        0, ge=0,
        description="a frame older than this (from its capture time) when its batch reaches the model is "
        "answered with a skipped_stale result instead of being classified; 0: classify every frame",
    )
    max_frame_elements: int = Field(3840 * 2160 * 3, ge=1, description="width*height*channels")
    result_content_type: Literal["msgpack", "json"] = "msgpack"
    max_poll_interval_ms: int = Field(300_000, ge=1000)
    broker_outage_deadline_s: float = Field(
        300.0, gt=0, description="how long the worker rides out an unreachable cluster before it exits (code 3)"
    )
    metrics_port: int | None = Field(
        None, ge=0, le=65535,
        description="serve Prometheus /metrics and the /healthz and /readyz probes on this port; unset: off",
    )
    tracing: Literal["headers", "otel"] = Field(
        "headers",
        description="headers: carry each input's W3C traceparent to its result or dead letter; otel: also record "
        "an OpenTelemetry span per record (the otel extra, and a tracer provider configured)",
    )
    health_file: str | None = Field(
        None,
        description="touched every few seconds while the worker's event loop runs; "
        "`python -m pipeline.health` checks its age (the image's HEALTHCHECK)",
    )
    session_timeout_ms: int = Field(
        10_000, ge=3000, description="how soon the group notices a worker that died without leaving"
    )

    @field_validator("input_topics", mode="before")
    @classmethod
    def _split_topics(cls, value: object) -> object:
        if isinstance(value, str):
            value = [t.strip() for t in value.split(",") if t.strip()]
        if isinstance(value, list) and not value:
            raise ValueError("at least one input topic is required")
        return value

    @property
    def result_media_type(self) -> str:
        """The results' content-type header: ``application/msgpack`` or ``application/json``."""
        return JSON if self.result_content_type == "json" else MSGPACK

    def acceleration(self) -> Acceleration:
        from pipeline.acceleration import Acceleration  # imports torch: only where a model runs

        return Acceleration(self.precision, self.channels_last, self.compile, self.max_batch_size, graph=self.graph)

    @property
    def limits(self) -> Limits:
        return Limits(self.max_payload_bytes, self.max_frame_elements)
