"""What the commands share: the bootstrap and Kafka settings of a command, the worker's
settings as flags, and running until a signal."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import typing
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

from pydantic import SecretStr

from devtools.broker import LocalBroker
from pipeline.config import KafkaSettings, WorkerSettings

T = TypeVar("T")


def bootstrap(args: argparse.Namespace) -> str:
    """--bootstrap, else STREAMINFER_KAFKA_BOOTSTRAP, else a running local broker, else :9092."""
    if getattr(args, "bootstrap", None):
        return str(args.bootstrap)
    if os.environ.get("STREAMINFER_KAFKA_BOOTSTRAP"):
        return os.environ["STREAMINFER_KAFKA_BOOTSTRAP"]
    state = LocalBroker().status()
    return state.bootstrap if state else KafkaSettings().kafka_bootstrap


def kafka(args: argparse.Namespace) -> KafkaSettings:
    """The Kafka settings of a command (security from STREAMINFER_* env), checked once against
    the broker: refused credentials or an untrusted certificate end the command (exit 4)."""
    settings = KafkaSettings(kafka_bootstrap=bootstrap(args))
    if not getattr(args, "_kafka_checked", False):
        from pipeline.kafka_access import check_access

        asyncio.run(check_access(settings.client_kwargs()))
        args._kafka_checked = True
    return settings


def with_bootstrap(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--bootstrap", help="Kafka host:port (default: $STREAMINFER_KAFKA_BOOTSTRAP, "
                   "else the local broker, else 127.0.0.1:9092)")
    return p


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per WorkerSettings field, so config is declared once; help shows each
    setting's default, its allowed values and its environment variable."""
    for name, field in WorkerSettings.model_fields.items():
        flags = ["--" + name.replace("_", "-")]
        if name == "kafka_bootstrap":
            flags.insert(0, "--bootstrap")  # the name every other command uses
        choices = typing.get_args(field.annotation) if typing.get_origin(field.annotation) is Literal else ()
        if name == "worker_id":
            default = "<hostname>-<pid>"
        elif field.default_factory is not None:
            made = field.default_factory()  # type: ignore[call-arg]
            default = ",".join(made) if isinstance(made, list) else made
        elif isinstance(field.default, SecretStr):
            default = "hidden"
        else:
            default = field.default
        parts = [field.description or "", f"default: {default}", f"env STREAMINFER_{name.upper()}"]
        parser.add_argument(
            *flags, dest=f"setting_{name}", metavar="{" + ",".join(choices) + "}" if choices else name.upper(),
            help="; ".join(p for p in parts if p),
        )


def worker_settings(args: argparse.Namespace) -> WorkerSettings:
    """Flags over ``STREAMINFER_*`` environment over defaults, as the worker reads them."""
    overrides = {
        key.removeprefix("setting_"): value
        for key, value in vars(args).items()
        if key.startswith("setting_") and value is not None
    }
    if "kafka_bootstrap" not in overrides:
        overrides["kafka_bootstrap"] = bootstrap(args)
    return WorkerSettings(**overrides)


def until_signalled(work: Coroutine[Any, Any, T]) -> T | None:
    """Run ``work``; SIGTERM or SIGINT cancels it (its cleanup runs) and gives None.

    ``docker compose stop`` sends SIGTERM: long-running commands end within the grace
    period with exit 0 instead of being killed (137).
    """
    async def go() -> T | None:
        task = asyncio.ensure_future(work)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            if task.cancelled():
                return None
            raise
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    return asyncio.run(go())
