"""The CLI as a new user meets it: fast help, one --bootstrap, readable errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def test_help_imports_neither_torch_opencv_aiokafka_nor_the_models() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from pipeline.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: main(['--help'])\n"
        "    except SystemExit: pass\n"
        "heavy = [m for m in ('torch', 'cv2', 'aiokafka', 'pipeline.models') if m in sys.modules]\n"
        "assert not heavy, f'heavy imports: {heavy}'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_worker_takes_bootstrap_like_every_other_command() -> None:
    args = build_parser().parse_args(["worker", "--bootstrap", "kafka:9092"])
    assert args.setting_kafka_bootstrap == "kafka:9092"
    args = build_parser().parse_args(["worker", "--kafka-bootstrap", "kafka:9092"])  # the old name still works
    assert args.setting_kafka_bootstrap == "kafka:9092"


def test_worker_help_shows_defaults_allowed_values_and_env_names(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["worker", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--delivery {at-least-once,exactly-once}" in text
    assert "--max-batch-size MAX_BATCH_SIZE" in text and "SETTING_" not in text
    assert "default: 1024; env STREAMINFER_MAX_BATCH_SIZE" in text
    assert "--worker-id WORKER_ID default: <hostname>-<pid>;" in text  # not this process's own value
    assert "default: streaminfer-frames,streaminfer-transactions; env STREAMINFER_INPUT_TOPICS" in text


def test_a_bad_setting_is_one_line_naming_flag_env_and_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--bootstrap", "127.0.0.1:1", "--max-batch-size", "0", "--delivery", "twice"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "https://" not in err, err
    assert "--max-batch-size (STREAMINFER_MAX_BATCH_SIZE): Input should be greater than or equal to 1, got '0'" in err
    assert "--delivery (STREAMINFER_DELIVERY)" in err and "'twice'" in err


class _Refused(Exception):
    pass


@pytest.mark.parametrize("argv", [
    ["produce", "transactions", "--count", "1"],
    ["results"],
    ["results", "--dead-letters"],
])
def test_producers_and_readers_use_the_security_settings_the_worker_uses(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import consumers.results_reader
    import producers.sinks
    from pipeline.cli import main

    seen: list[dict[str, object]] = []

    class Client:
        def __init__(self, *topics: str, **kwargs: object) -> None:
            seen.append(kwargs)

        async def start(self) -> None:
            raise _Refused

        async def stop(self) -> None:
            pass

    monkeypatch.setattr(producers.sinks, "AIOKafkaProducer", Client)  # the publisher's, through its sink
    monkeypatch.setattr(consumers.results_reader, "AIOKafkaConsumer", Client)
    for name, value in {"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "SCRAM-SHA-512",
                        "SASL_USERNAME": "alice", "SASL_PASSWORD": "hunter2"}.items():
        monkeypatch.setenv(f"STREAMINFER_{name}", value)
    with pytest.raises(_Refused):
        main([*argv, "--bootstrap", "broker:9093"])
    [kwargs] = seen
    assert kwargs["bootstrap_servers"] == "broker:9093" and kwargs["security_protocol"] == "SASL_SSL"
    assert (kwargs["sasl_mechanism"], kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == (
        "SCRAM-SHA-512", "alice", "hunter2")
