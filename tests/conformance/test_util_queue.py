"""``fedexec.util.queue.Queue`` (API.md "Runtime helpers"; Ray's Queue semantics)."""

from __future__ import annotations

import asyncio
import gc
import queue as stdlib_queue
import time

import pytest
from _support import gates_fixture, touch

import fedexec
from fedexec import backends
from fedexec.util.queue import Empty, Full, Queue

gates = gates_fixture()

T = 30
needs_queue = pytest.mark.requires("actors", "async_actors")


# --------------------------------------------------------------------------- helpers
def produce(q, items):
    for item in items:
        q.put(item, timeout=T)
    return len(items)


def get_after(q, started, timeout=None):
    touch(started)
    return q.get(timeout=timeout)


def queue_in_task(n):
    q = Queue()  # on the runtime running this task
    q.put_nowait_batch(range(n))
    items = q.get_nowait_batch(n)
    q.shutdown()
    return items


class Consumer:
    def take(self, q, n):
        return [q.get(timeout=T) for _ in range(n)]


class AsyncConsumer:
    async def take(self, q, n):
        return [await q.get_async(timeout=T) for _ in range(n)]

    async def try_get(self, q, timeout):
        try:
            return await q.get_async(timeout=timeout)
        except Empty:
            return "empty"


# --------------------------------------------------------------------------- basics
def test_errors_subclass_the_stdlib_ones():
    assert issubclass(Empty, stdlib_queue.Empty)
    assert issubclass(Full, stdlib_queue.Full)


@needs_queue
def test_fifo_order_and_sizes(ex):
    q = Queue(3, executor=ex)
    assert q.empty() and not q.full() and q.qsize() == 0
    for item in ["a", {"b": 1}, bytearray(b"c")]:
        q.put(item)
    assert q.full() and not q.empty()
    assert q.qsize() == q.size() == len(q) == 3
    assert q.get() == "a"
    assert q.get() == {"b": 1}
    out = q.get()
    assert out == bytearray(b"c") and type(out) is bytearray
    assert q.empty()


@needs_queue
def test_unbounded_queue_is_never_full(ex):
    q = Queue(executor=ex)
    q.put_nowait_batch(range(100))
    assert not q.full() and q.qsize() == 100


@needs_queue
def test_nonblocking_put_on_full_and_get_on_empty_raise(ex):
    q = Queue(1, executor=ex)
    with pytest.raises(Empty):
        q.get(block=False)
    with pytest.raises(Empty):
        q.get_nowait()
    q.put_nowait(1)
    with pytest.raises(Full):
        q.put(2, block=False)
    with pytest.raises(Full, match="full"):
        q.put_nowait(2)
    assert q.get_nowait() == 1


@needs_queue
def test_get_timeout_on_empty_raises_empty_after_the_timeout(ex):
    q = Queue(executor=ex)
    start = time.monotonic()
    with pytest.raises(Empty):
        q.get(timeout=0.3)
    assert time.monotonic() - start >= 0.29
    q.put("still works")  # the timed-out get took nothing and left nothing behind
    assert q.get(timeout=T) == "still works"


@needs_queue
def test_put_timeout_on_full_raises_full_and_adds_nothing(ex):
    q = Queue(1, executor=ex)
    q.put("first")
    start = time.monotonic()
    with pytest.raises(Full):
        q.put("second", timeout=0.3)
    assert time.monotonic() - start >= 0.29
    assert q.qsize() == 1
    assert q.get_nowait() == "first"
    with pytest.raises(Empty):
        q.get_nowait()


@needs_queue
def test_negative_timeout_is_a_value_error(ex):
    q = Queue(executor=ex)
    with pytest.raises(ValueError, match="timeout"):
        q.put(1, timeout=-1)
    with pytest.raises(ValueError, match="timeout"):
        q.get(timeout=-1)


@needs_queue
def test_object_refs_travel_as_refs(ex):
    q = Queue(executor=ex)
    ref = ex.put([1, 2, 3])
    q.put(ref)
    out = q.get(timeout=T)
    assert isinstance(out, fedexec.ObjectRef)
    assert ex.get(out, timeout=T) == [1, 2, 3]


# --------------------------------------------------------------------------- batches
@needs_queue
def test_batch_put_and_get(ex):
    q = Queue(4, executor=ex)
    q.put_nowait_batch([1, 2, 3])
    with pytest.raises(Full):
        q.put_nowait_batch([4, 5])  # all or nothing
    assert q.qsize() == 3
    with pytest.raises(Empty):
        q.get_nowait_batch(4)  # all or nothing
    assert q.get_nowait_batch(2) == [1, 2]
    assert q.get_nowait_batch(0) == []
    assert q.get_nowait_batch(1) == [3]


@needs_queue
def test_batch_argument_errors(ex):
    q = Queue(executor=ex)
    with pytest.raises(TypeError):
        q.put_nowait_batch(5)
    with pytest.raises(TypeError):
        q.get_nowait_batch(1.5)
    with pytest.raises(ValueError):
        q.get_nowait_batch(-1)


# --------------------------------------------------------------------------- across processes
@needs_queue
def test_producer_task_and_consumer_actor_through_a_small_queue(ex):
    q = Queue(2, executor=ex)  # the producer must block on a full queue
    consumer = ex.actor(Consumer)
    taken = consumer.take.remote(q, 20)
    produced = ex.submit(produce, q, list(range(20)))
    assert ex.get(taken, timeout=T) == list(range(20))
    assert ex.get(produced, timeout=T) == 20
    assert q.empty()


@needs_queue
def test_a_blocked_get_does_not_block_other_callers_puts(ex, gates):
    gate = gates()
    q = Queue(executor=ex)
    waiting = ex.submit(get_after, q, gate.started)  # blocks in get, no timeout
    gate.wait_started()
    time.sleep(0.2)  # give it time to be inside get
    q.put("hello", timeout=T)
    assert ex.get(waiting, timeout=T) == "hello"


@needs_queue
def test_get_timeout_inside_a_task(ex, gates):
    gate = gates()
    q = Queue(executor=ex)
    with pytest.raises(Empty):
        ex.get(ex.submit(get_after, q, gate.started, 0.2), timeout=T)


@needs_queue
def test_queue_made_inside_a_task_uses_that_runtime(ex):
    assert ex.get(ex.submit(queue_in_task, 5), timeout=T) == [0, 1, 2, 3, 4]


@needs_queue
def test_default_executor_is_used_without_executor_argument(backend_name):
    fedexec.init(backend=backend_name, num_cpus=2)
    q = Queue()
    q.put(7)
    assert q.get(timeout=T) == 7
    q.shutdown()


# --------------------------------------------------------------------------- asyncio
@needs_queue
def test_async_put_and_get_from_asyncio_run(ex):
    q = Queue(1, executor=ex)

    async def main():
        await q.put_async("x")
        with pytest.raises(Full):
            await q.put_async("y", block=False)
        with pytest.raises(Full):
            await q.put_async("y", timeout=0.2)
        got = await q.get_async()
        with pytest.raises(Empty):
            await q.get_async(block=False)
        with pytest.raises(Empty):
            await q.get_async(timeout=0.2)
        return got

    assert asyncio.run(main()) == "x"


@needs_queue
def test_async_actor_consumes_with_get_async(ex):
    q = Queue(executor=ex)
    consumer = ex.actor(AsyncConsumer)
    assert ex.get(consumer.try_get.remote(q, 0.2), timeout=T) == "empty"
    taken = consumer.take.remote(q, 5)
    ex.get(ex.submit(produce, q, list(range(5))), timeout=T)
    assert ex.get(taken, timeout=T) == list(range(5))


# --------------------------------------------------------------------------- shutdown
@needs_queue
@pytest.mark.parametrize("force", [True, False])
def test_shutdown_fails_blocked_callers_and_the_handle(ex, gates, force):
    gate = gates()
    q = Queue(executor=ex)
    waiting = ex.submit(get_after, q, gate.started)  # blocks forever in get
    gate.wait_started()
    start = time.monotonic()
    q.shutdown(force=force, grace_period_s=0.5)
    assert time.monotonic() - start < T
    with pytest.raises(fedexec.ActorDiedError):
        ex.get(waiting, timeout=T)
    with pytest.raises(RuntimeError, match="shut down"):
        q.put(1)
    q.shutdown()  # again: nothing to do
    # The killed actor's blocked call must have been unwound where it ran; one left
    # suspended would be finalized here, in the wrong thread, and raise.
    time.sleep(0.2)
    gc.collect()


@needs_queue
def test_graceful_shutdown_of_an_idle_queue_is_quick(ex):
    q = Queue(executor=ex)
    q.put(1)
    start = time.monotonic()
    q.shutdown(grace_period_s=20)
    assert time.monotonic() - start < 10  # did not wait out the grace period


def test_backend_without_actors_cannot_make_a_queue(ex, backend_name):
    if "actors" in backends.capabilities(backend_name):
        pytest.skip(f"backend {backend_name!r} has actors")
    with pytest.raises(fedexec.UnsupportedOnBackendError):
        Queue(executor=ex)
