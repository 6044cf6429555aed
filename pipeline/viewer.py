"""``streaminfer viewer``: a small live web page of what the pipeline answers.

Per video stream, the latest frame that has a result, with its labels, and the stream's
result rate and end-to-end latency (event time to result produced, from the result's own
timings) over the last ``WINDOW_S`` seconds. Per transaction topic, the same rate and
latency and the latest scores. The page polls ``/api/state``; a frame's image is
``/frame?stream=ID&seq=N``.

It reads the results topic and the frames topic (the pixels are not in the results), each
from its end unless ``from_beginning``, with no consumer group: it moves nobody's offsets.
``ViewerState`` is the pure part (fake clock in its tests); ``Viewer`` adds Kafka and HTTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from pipeline.exceptions import ConfigurationError
from pipeline.http_server import HttpServer
from schemas.codec import decode_input, decode_result
from schemas.errors import DecodeError
from schemas.models import Frame, FrameEncoding, Result

log = logging.getLogger("streaminfer.viewer")

WINDOW_S = 10.0
# per stream, the frames waiting for their result, bounded by their bytes: a pipeline that
# runs minutes behind its camera (workers still loading their models while the camera
# publishes, then catching up) still finds each result's frame here; 64 frames, as it was,
# were 6.4 s of a 10 fps camera, and nothing showed until the workers had caught up
FRAMES_KEPT_BYTES = 32 * 1024 * 1024
SCORES_KEPT = 12  # per transaction topic


@dataclass
class _Rate:
    """Results and their end-to-end latency over the last ``WINDOW_S`` seconds."""

    seen: deque[tuple[float, int]] = field(default_factory=deque)  # (arrival time, latency ms)

    def add(self, now: float, latency_ms: int) -> None:
        self.seen.append((now, latency_ms))

    def summary(self, now: float) -> dict[str, float | None]:
        while self.seen and self.seen[0][0] < now - WINDOW_S:
            self.seen.popleft()
        latencies = sorted(latency for _, latency in self.seen)
        if not latencies:
            return {"per_s": 0.0, "p50_ms": None, "p99_ms": None}
        first, last = self.seen[0][0], self.seen[-1][0]
        # arrivals per second between the first and the last seen (the window, at first arrival)
        rate = (len(latencies) - 1) / (last - first) if last > first else len(latencies) / WINDOW_S
        return {"per_s": round(rate, 1), "p50_ms": latencies[len(latencies) // 2],
                "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]}


@dataclass
class _Video:
    frames: OrderedDict[int, tuple[bytes, str]] = field(default_factory=OrderedDict)  # seq -> (image, mime)
    frame_bytes: int = 0  # of the frames kept
    shown: tuple[int, bytes, str, list[dict[str, Any]], str] | None = None  # seq, image, mime, labels, status
    rate: _Rate = field(default_factory=_Rate)

    def keep(self, seq: int, image: tuple[bytes, str], limit_bytes: int) -> None:
        """Keep a frame until its result comes; the oldest go past ``limit_bytes`` (the newest stays)."""
        self.take(seq)
        self.frames[seq] = image
        self.frame_bytes += len(image[0])
        while self.frame_bytes > limit_bytes and len(self.frames) > 1:
            self.frame_bytes -= len(self.frames.popitem(last=False)[1][0])

    def take(self, seq: int) -> tuple[bytes, str] | None:
        image = self.frames.pop(seq, None)
        if image is not None:
            self.frame_bytes -= len(image[0])
        return image


@dataclass
class _Scores:
    latest: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=SCORES_KEPT))
    rate: _Rate = field(default_factory=_Rate)


_MIME = {FrameEncoding.JPEG: "image/jpeg", FrameEncoding.PNG: "image/png"}


class ViewerState:
    """What the page shows, fed with frames and results as they are read."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, frames_kept_bytes: int = FRAMES_KEPT_BYTES) -> None:
        self._clock = clock
        self._frames_kept_bytes = frames_kept_bytes
        self.videos: dict[str, _Video] = {}
        self.transactions: dict[str, _Scores] = {}

    def frame(self, frame: Frame) -> None:
        mime = _MIME.get(frame.encoding)
        if mime is None:  # raw pixels: the page has nothing to show them with
            return
        self.videos.setdefault(frame.stream_id, _Video()).keep(frame.seq, (frame.data, mime), self._frames_kept_bytes)

    def result(self, result: Result) -> None:
        now = self._clock()
        latency_ms = result.timings.produced_ms - result.timings.event_ms
        if result.kind == "frame":
            stream, _, seq_text = result.event_id.rpartition("/")
            video = self.videos.setdefault(stream, _Video())
            video.rate.add(now, latency_ms)
            seq = int(seq_text) if seq_text.isdigit() else -1
            image = video.take(seq)
            if image is not None and (video.shown is None or seq >= video.shown[0]):
                labels = list(result.outputs.get("labels", [])) if result.status == "ok" else []
                video.shown = (seq, image[0], image[1], labels, result.status)
            return
        scores = self.transactions.setdefault(result.input.topic, _Scores())
        scores.rate.add(now, latency_ms)
        scores.latest.appendleft({"id": result.event_id, "key": result.key, "latency_ms": latency_ms,
                                  "outputs": result.outputs})

    def snapshot(self) -> dict[str, Any]:
        now = self._clock()
        videos = []
        for stream, video in sorted(self.videos.items()):
            shown = video.shown
            videos.append({"stream": stream, **video.rate.summary(now),
                           "seq": shown[0] if shown else None, "labels": shown[3] if shown else [],
                           "status": shown[4] if shown else None,
                           "image": f"/frame?stream={stream}&seq={shown[0]}" if shown else None})
        transactions = [{"topic": topic, **scores.rate.summary(now), "latest": list(scores.latest)}
                        for topic, scores in sorted(self.transactions.items())]
        return {"video": videos, "transactions": transactions}

    def image(self, stream: str) -> tuple[bytes, str] | None:
        video = self.videos.get(stream)
        if video is None or video.shown is None:
            return None
        return video.shown[1], video.shown[2]


class Viewer:
    """Reads ``results_topic`` and ``frames_topic``, serves the page on ``port``."""

    def __init__(self, client_kwargs: Mapping[str, object], results_topic: str, frames_topic: str | None,
                 host: str = "0.0.0.0", port: int = 8080, from_beginning: bool = False,
                 port_file: Path | None = None) -> None:
        """``port_file``: where the port is written once the page is served (for port 0)."""
        self.state = ViewerState()
        self._port_file = port_file
        self._client_kwargs = dict(client_kwargs)
        self._topics = [t for t in (results_topic, frames_topic) if t]
        self._results_topic = results_topic
        self._offset_reset = "earliest" if from_beginning else "latest"
        self._http = HttpServer(self._answer, host, port)
        self._host = host
        self.reading = False  # the consumer has its partitions: what is published from now on shows

    @property
    def port(self) -> int:
        return self._http.port

    async def run(self, stop: asyncio.Event) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(**self._client_kwargs, enable_auto_commit=False,
                                    auto_offset_reset=self._offset_reset)
        await consumer.start()
        try:
            cluster = await consumer._client.fetch_all_metadata()  # every topic's partitions, now
            if missing := [t for t in self._topics if not cluster.partitions_for_topic(t)]:
                where = self._client_kwargs.get("bootstrap_servers")
                raise ConfigurationError(f"the viewer's topics {missing} do not exist on {where} "
                                         "(streaminfer topics create)")
            partitions = [TopicPartition(t, p) for t in self._topics for p in cluster.partitions_for_topic(t) or ()]
            consumer.assign(partitions)
            if self._offset_reset == "latest":
                await consumer.seek_to_end(*partitions)
            else:
                await consumer.seek_to_beginning(*partitions)
            for tp in partitions:
                await consumer.position(tp)  # resolve now: "reading" means from here on
            await self._http.start()
            if self._port_file is not None:
                self._port_file.write_text(f"{self.port}\n")
            self.reading = True
            log.info("viewer on http://%s:%d/ (topics %s)", self._host, self.port, ", ".join(self._topics))
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=500)
                for tp, records in batches.items():
                    for record in records:
                        self._take(tp.topic, record.value, record.headers)
        finally:
            await self._http.stop()
            await consumer.stop()

    def _take(self, topic: str, value: bytes | None, headers: Any) -> None:
        if value is None:
            return
        if topic == self._results_topic:
            try:
                self.state.result(decode_result(value, headers))
            except Exception as exc:  # not a result: nothing to show, and no reason to stop
                log.debug("skipped a record of %s that is not a result: %r", topic, exc)
            return
        event = decode_input(value, headers)
        if isinstance(event, Frame):
            self.state.frame(event)
        elif isinstance(event, DecodeError):
            log.debug("skipped an input of %s: %s", topic, event.message)

    def _answer(self, path: str, query: str) -> tuple[str, bytes, str]:
        if path == "/":
            return "200 OK", PAGE.encode(), "text/html; charset=utf-8"
        if path == "/api/state":
            body = json.dumps({"reading": self.reading, **self.state.snapshot()})
            return "200 OK", body.encode(), "application/json"
        if path == "/frame":
            stream = parse_qs(query).get("stream", [""])[0]
            image = self.state.image(stream)
            if image is not None:
                return "200 OK", image[0], image[1]
            return "404 Not Found", b"no frame with a result yet\n", "text/plain; charset=utf-8"
        return "404 Not Found", b"try /, /api/state or /frame?stream=ID\n", "text/plain; charset=utf-8"


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>streaminfer</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 16px; background: #111; color: #eee; }
h1 { font-size: 18px; } h2 { font-size: 15px; margin: 4px 0; }
.streams { display: flex; flex-wrap: wrap; gap: 16px; }
.card { background: #222; padding: 10px; border-radius: 6px; }
.card img { display: block; max-width: 480px; max-height: 360px; }
.stats { color: #9cf; margin: 4px 0; } .label { font-size: 16px; } .prob { color: #aaa; }
table { border-collapse: collapse; } td, th { padding: 2px 8px; text-align: left; }
</style></head>
<body><h1>streaminfer: live results</h1>
<div id="video" class="streams"></div><div id="transactions" class="streams"></div>
<script>
function stats(s) {
  const ms = v => v === null ? "-" : v + " ms";
  return s.per_s + " results/s, latency p50 " + ms(s.p50_ms) + ", p99 " + ms(s.p99_ms);
}
function el(tag, cls, text) {
  const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text;
  return e;
}
async function refresh() {
  let state;
  try { state = await (await fetch("/api/state")).json(); } catch (e) { return; }
  const video = document.getElementById("video"); video.replaceChildren();
  for (const v of state.video) {
    const card = el("div", "card video"); card.dataset.stream = v.stream;
    card.append(el("h2", "", "video " + v.stream + (v.seq === null ? "" : " #" + v.seq)));
    card.append(el("div", "stats", stats(v)));
    if (v.image) { const img = el("img"); img.src = v.image; img.alt = v.stream; card.append(img); }
    for (const l of v.labels.slice(0, 3)) {
      const row = el("div", "label", l.label + " "); row.append(el("span", "prob", (100 * l.prob).toFixed(1) + "%"));
      card.append(row);
    }
    if (v.status && v.status !== "ok") card.append(el("div", "label", v.status));
    video.append(card);
  }
  const txns = document.getElementById("transactions"); txns.replaceChildren();
  for (const t of state.transactions) {
    const card = el("div", "card transactions"); card.dataset.topic = t.topic;
    card.append(el("h2", "", "transactions " + t.topic)); card.append(el("div", "stats", stats(t)));
    const table = el("table"); const head = el("tr");
    for (const h of ["id", "account", "score", "latency"]) head.append(el("th", "", h));
    table.append(head);
    for (const r of t.latest) {
      const row = el("tr"); const score = r.outputs.score;
      for (const c of [r.id, r.key, score === undefined ? JSON.stringify(r.outputs) : score.toFixed(3),
                       r.latency_ms + " ms"]) row.append(el("td", "", c));
      table.append(row);
    }
    card.append(table); txns.append(card);
  }
}
refresh(); setInterval(refresh, 500);
</script></body></html>
"""
