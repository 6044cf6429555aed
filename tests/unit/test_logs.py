"""Log lines as text or JSON, never with the SASL password in them."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from pipeline.logs import JsonFormatter, formatter


def _record(message: str, exc: BaseException | None = None) -> logging.LogRecord:
    return logging.LogRecord("streaminfer.worker", logging.WARNING, __file__, 1, message, None,
                             (type(exc), exc, None) if exc else None)


def test_json_lines_carry_time_level_logger_message_and_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMINFER_SASL_PASSWORD", raising=False)
    line = json.loads(JsonFormatter().format(_record("partitions assigned", ValueError("boom"))))
    assert line["level"] == "WARNING" and line["logger"] == "streaminfer.worker"
    assert line["message"] == "partitions assigned" and "ValueError: boom" in line["error"]
    assert line["ts"].endswith("+00:00")


@pytest.mark.parametrize("kind", ["text", "json"])
def test_the_password_is_masked_in_either_format(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMINFER_SASL_PASSWORD", "hunter2")
    out = formatter(kind).format(_record("connecting as alice:hunter2@broker"))
    assert "hunter2" not in out and "alice:***@broker" in out


def test_a_json_worker_ends_with_a_json_line_and_its_exit_code() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "--log-format", "json", "worker", "--precision", "fp16",
         "--frame-model", "none", "--bootstrap", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    lines = [json.loads(line) for line in done.stderr.splitlines()]  # every line is JSON
    assert lines[-1] == {"level": "ERROR", "logger": "streaminfer", "exit_code": 2,
                         "message": "--precision fp16 needs a CUDA device; on a CPU use bf16"}
    assert any(line["logger"] == "streaminfer.worker" for line in lines[:-1])
