"""The viewer in headless Chromium (Debian's ``chromium``): a worker classifies a published
frame, and the page shows that frame with the label the worker gave it. The screenshot is
kept in ``test-artifacts/viewer.png``."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from producers.publisher import publish
from schemas.images import encode_image
from schemas.models import Frame, FrameEncoding
from tests.integration.conftest import Topics
from tests.integration.helpers import collect_results
from tests.integration.workers import WorkerProcess, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
MAGENTA = (255, 0, 255)  # BGR: a colour nothing else on the page has


@pytest.fixture
def frame_topics(kafka_bootstrap: str) -> Topics:
    return Topics(kafka_bootstrap, partitions=1)


def _state(port: int) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=5) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--hide-scrollbars", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (.ci/run installs it)")
def test_the_page_shows_a_published_frame_with_its_label(frame_topics: Topics, tmp_path: Path) -> None:
    port_file, log = tmp_path / "port", tmp_path / "viewer.log"
    log_file = log.open("wb")
    viewer = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "viewer", "--bootstrap", frame_topics.bootstrap, "--port", "0",
         "--host", "127.0.0.1", "--results-topic", frame_topics.results, "--frames-topic", frame_topics.inputs,
         "--port-file", str(port_file)],
        stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ},
    )
    worker = WorkerProcess("viewed", frame_topics.worker_env(), tmp_path, ["--transaction-model", "none"])
    try:
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert viewer.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the viewer did not start"
            time.sleep(0.2)
        port = int(port_file.read_text())
        wait_until(lambda: _state(port)["reading"], 30, "the viewer reading its topics")
        worker.wait_assigned(1)
        image = np.zeros((240, 320, 3), np.uint8)
        image[:] = MAGENTA
        frame = Frame(stream_id="magenta-cam", seq=7, captured_at_ms=int(time.time() * 1000),
                      encoding=FrameEncoding.JPEG, width=320, height=240, data=encode_image(image, FrameEncoding.JPEG))
        asyncio.run(publish([frame], bootstrap=frame_topics.bootstrap, topic=frame_topics.inputs))
        [result] = collect_results(frame_topics.bootstrap, frame_topics.results, 1, timeout_s=90)
        label = result.outputs["labels"][0]["label"]
        wait_until(lambda: any(v["seq"] == 7 for v in _state(port)["video"]), 30, "the frame on the page")

        url = f"http://127.0.0.1:{port}/"
        dom = _chromium("--virtual-time-budget=3000", "--dump-dom", url)
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert "video magenta-cam #7" in dom.stdout and label in dom.stdout
        assert '<img src="/frame?stream=magenta-cam&amp;seq=7"' in dom.stdout
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "viewer.png"
        shot.unlink(missing_ok=True)
        done = _chromium("--virtual-time-budget=3000", "--window-size=900,700", f"--screenshot={shot}", url)
        assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
        pixels = cv2.imread(str(shot))
        magenta = np.all(np.abs(pixels.astype(int) - MAGENTA) < 40, axis=2)
        assert magenta.sum() > 0.8 * 320 * 240, f"the frame is not in the screenshot ({magenta.sum()} px)"
    finally:
        worker.stop()
        viewer.terminate()
        viewer.wait(30)
        log_file.close()


def test_a_viewer_of_topics_that_do_not_exist_says_so_and_exits_2(kafka_bootstrap: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "viewer", "--bootstrap", kafka_bootstrap, "--port", "0",
         "--results-topic", "no-such-results", "--frames-topic", "no-such-frames"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(
        "streaminfer: error: the viewer's topics ['no-such-results', 'no-such-frames'] do not exist")
