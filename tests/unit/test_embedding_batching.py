"""The micro-batcher on a stand-in model that echoes each image's first pixel, so every row says whose it is."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import numpy as np
import pytest

from tubelens.embedding.batching import MicroBatcher
from tubelens.errors import NotReady
from tubelens.modelkit.backbone import Embeddings


class EchoModel:
    """Row i's vector and probabilities are filled with image i's first pixel; records every batch it runs."""

    def __init__(self, delay_s: float = 0.0, fail_on: float | None = None) -> None:
        self.batches: list[list[float]] = []
        self.delay_s = delay_s
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> Embeddings:
        tags = batch[:, 0, 0, 0].tolist()
        with self.lock:
            self.batches.append(tags)
        time.sleep(self.delay_s)
        if self.fail_on in tags:
            raise RuntimeError("the model broke")
        column = batch[:, :1, 0, 0]
        return Embeddings(np.repeat(column, 1280, axis=1), np.repeat(column, 1000, axis=1))


def images(*tags: float) -> np.ndarray:
    batch = np.zeros((len(tags), 3, 224, 224), dtype=np.float32)
    batch[:, 0, 0, 0] = tags
    return batch


def tags_of(result: Embeddings) -> list[float]:
    return result.vectors[:, 0].tolist()


def submit_together(batcher: MicroBatcher, requests: list[np.ndarray]) -> list[Future[Embeddings]]:
    """Submit from one thread per request, all released at once."""
    futures: list[Future[Embeddings] | None] = [None] * len(requests)
    start = threading.Barrier(len(requests))

    def submit(n: int) -> None:
        start.wait()
        futures[n] = batcher.submit(requests[n])

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return futures  # type: ignore[return-value]


def test_each_caller_gets_its_own_rows_in_its_own_order() -> None:
    requests = [images(*(100 * n + k for k in range(1 + n % 4))) for n in range(40)]
    with MicroBatcher(EchoModel(), max_images=16, window_s=0.02) as batcher:
        futures = submit_together(batcher, requests)
        results = [future.result(timeout=10) for future in futures]

    for request, result in zip(requests, results, strict=True):
        assert tags_of(result) == request[:, 0, 0, 0].tolist()
        assert result.probabilities.shape == (len(request), 1000)


def test_requests_arriving_together_share_one_forward_pass() -> None:
    model = EchoModel()
    with MicroBatcher(model, max_images=32, window_s=0.2) as batcher:
        futures = submit_together(batcher, [images(n) for n in range(8)])
        for future in futures:
            future.result(timeout=10)

    assert len(model.batches) == 1
    assert sorted(model.batches[0]) == list(range(8))


def test_a_batch_stops_at_max_images_without_splitting_a_request() -> None:
    model = EchoModel(delay_s=0.05)
    with MicroBatcher(model, max_images=4, window_s=0.2) as batcher:
        futures = submit_together(batcher, [images(3 * n, 3 * n + 1, 3 * n + 2) for n in range(6)])
        for future in futures:
            future.result(timeout=10)

    assert all(len(batch) == 3 for batch in model.batches)  # two requests of 3 would make 6 > 4
    assert len(model.batches) == 6


def test_a_request_larger_than_max_images_runs_alone() -> None:
    model = EchoModel()
    with MicroBatcher(model, max_images=4, window_s=0.0) as batcher:
        result = batcher.submit(images(*range(10))).result(timeout=10)

    assert tags_of(result) == list(range(10))
    assert model.batches == [list(range(10))]


def test_a_lone_request_waits_no_longer_than_the_window() -> None:
    with MicroBatcher(EchoModel(), window_s=0.05) as batcher:
        started = time.monotonic()
        batcher.submit(images(1)).result(timeout=10)
        assert time.monotonic() - started < 1.0


def test_a_failed_forward_pass_fails_its_callers_and_the_batcher_carries_on() -> None:
    model = EchoModel(fail_on=13)
    with MicroBatcher(model, window_s=0.0) as batcher:
        with pytest.raises(RuntimeError, match="the model broke"):
            batcher.submit(images(13)).result(timeout=10)
        assert tags_of(batcher.submit(images(14)).result(timeout=10)) == [14]


def test_a_malformed_batch_is_refused_before_it_can_join_others() -> None:
    with MicroBatcher(EchoModel()) as batcher:
        with pytest.raises(ValueError, match=r"expected float32 \[N, 3, 224, 224\]"):
            batcher.submit(np.zeros((1, 3, 100, 100), dtype=np.float32))
        with pytest.raises(ValueError, match="float64"):
            batcher.submit(np.zeros((1, 3, 224, 224)))


def test_a_cancelled_request_is_skipped() -> None:
    model = EchoModel(delay_s=0.2)
    with MicroBatcher(model, max_images=1, window_s=0.0) as batcher:
        running = batcher.submit(images(1))
        cancelled = batcher.submit(images(2))
        assert cancelled.cancel()
        running.result(timeout=10)

    assert model.batches == [[1.0]]


def test_close_finishes_queued_requests_then_refuses_new_ones() -> None:
    model = EchoModel(delay_s=0.05)
    batcher = MicroBatcher(model, max_images=1, window_s=0.0)
    futures = [batcher.submit(images(n)) for n in range(5)]
    batcher.close()

    assert [tags_of(future.result(timeout=0)) for future in futures] == [[n] for n in range(5)]
    assert not batcher._worker.is_alive()
    with pytest.raises(NotReady):
        batcher.submit(images(9))


@pytest.mark.parametrize("max_images, window_s", [(0, 0.01), (8, -1.0)])
def test_settings_that_cannot_work_are_refused(max_images: int, window_s: float) -> None:
    with pytest.raises(ValueError):
        MicroBatcher(EchoModel(), max_images=max_images, window_s=window_s)
