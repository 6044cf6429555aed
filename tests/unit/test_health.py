"""Heartbeat liveness: the file the worker touches, and the check the image's HEALTHCHECK runs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.health import check, heartbeat, main


def test_fresh_file_is_healthy_and_a_stale_or_missing_one_is_not(tmp_path: Path) -> None:
    beat = tmp_path / "alive"
    assert "does not exist" in (check(beat) or "")
    beat.touch()
    mtime = beat.stat().st_mtime
    assert check(beat, max_age_s=30, now=mtime + 29) is None
    problem = check(beat, max_age_s=30, now=mtime + 31)
    assert problem is not None and "31s ago" in problem and "stuck" in problem


def test_heartbeat_touches_while_running_and_removes_the_file_when_cancelled(tmp_path: Path) -> None:
    beat = tmp_path / "sub" / "alive"

    async def go() -> list[float]:
        task = asyncio.create_task(heartbeat(beat, interval_s=0.05))
        seen = []
        for _ in range(3):
            await asyncio.sleep(0.12)
            seen.append(beat.stat().st_mtime_ns)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return seen

    seen = asyncio.run(go())
    assert seen == sorted(seen) and len(set(seen)) == 3  # touched again and again
    assert not beat.exists()


def test_main_exit_codes(tmp_path: Path, capsys: object) -> None:
    beat = tmp_path / "alive"
    assert main(["--file", str(beat)]) == 1
    beat.touch()
    assert main(["--file", str(beat)]) == 0
    os.utime(beat, (0, 0))
    assert main(["--file", str(beat), "--max-age", "5"]) == 1


def test_the_check_imports_nothing_heavy(tmp_path: Path) -> None:
    """It runs every 15 s in each worker container: no torch, no OpenCV, no aiokafka."""
    beat = tmp_path / "alive"
    beat.touch()
    code = (
        "import runpy, sys; sys.argv = ['x', '--file', sys.argv[1]];\n"
        "try: runpy.run_module('pipeline.health', run_name='__main__')\n"
        "except SystemExit as e: assert e.code == 0, e.code\n"
        "heavy = sorted(m for m in ('torch', 'cv2', 'aiokafka', 'numpy', 'pydantic') if m in sys.modules)\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code, str(beat)], check=True, cwd=Path(__file__).resolve().parents[2])


def test_with_a_metrics_port_the_check_asks_healthz(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import http.server
    import threading

    answers = {"status": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(answers["status"] if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        monkeypatch.setenv("STREAMINFER_METRICS_PORT", str(port))
        assert main([]) == 0
        answers["status"] = 503
        assert main([]) == 1 and "answered 503" in capsys.readouterr().err
    finally:
        server.shutdown()
        server.server_close()
    assert main([]) == 1 and "did not answer" in capsys.readouterr().err  # nothing listens any more
