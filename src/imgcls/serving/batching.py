"""Dynamic batching: requests that arrive together share one forward pass.

Each request puts its decoded image on a bounded queue and awaits its result. One task takes the first
waiting image, gathers more for at most `max_wait_s` (or until `max_batch`), and runs the batch in a worker
thread, so the event loop keeps accepting requests while the model computes. It waits only while other
requests are on their way (announced, still decoding): a lone request is not delayed. A full queue is refused at
once (the caller answers 503 + Retry-After) instead of letting latency grow without bound; the images being
decoded count as queued, so a refusal comes before the decode (under overload, refusals would else take the
CPU the admitted requests need).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np


class Overloaded(Exception):
    """The queue is full: the server is past its capacity."""


class DynamicBatcher:
    def __init__(self, predict: Callable, max_batch: int = 32, max_wait_s: float = 0.005, max_queue: int = 256,
                 on_batch: Callable[[int], None] | None = None):
        self.predict, self.max_batch, self.max_wait_s, self.max_queue = predict, max_batch, max_wait_s, max_queue
        self.on_batch = on_batch or (lambda size: None)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imgcls-inference")
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.arriving = 0  # requests announced (being decoded) but not yet queued

    @property
    def depth(self) -> int:
        return self.queue.qsize() if self.queue is not None else 0

    async def start(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.max_queue)
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _queue(self) -> asyncio.Queue[Any]:
        if self.queue is None:
            raise RuntimeError("the batcher is not started: await start() first")
        return self.queue

    def announce(self) -> None:
        """A request has arrived and will submit an image soon (once decoded): worth waiting for. It holds a
        place in the queue from now on, so a full server refuses it (Overloaded) before it spends a decode."""
        if self.depth + self.arriving >= self.max_queue:
            raise Overloaded
        self.arriving += 1

    async def submit(self, image, announced: bool = False):
        """The model's output for one decoded image, computed in a batch with whatever else is waiting."""
        if announced:
            self.arriving -= 1
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue().put_nowait((image, future))
        except asyncio.QueueFull:
            raise Overloaded from None
        return await future

    def withdraw(self) -> None:
        """An announced request will not submit after all (its image could not be decoded)."""
        self.arriving -= 1

    async def _gather(self) -> list:
        queue = self._queue()
        batch = [await queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            if self.arriving <= 0:
                break  # nobody else is on the way: waiting would only add latency
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break
        return [(image, future) for image, future in batch if not future.done()]  # timed-out callers left

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if not batch:
                continue
            self.on_batch(len(batch))
            try:
                outputs = await loop.run_in_executor(self.executor, self.predict, np.stack([i for i, _ in batch]))
            except Exception as error:  # a failed batch fails its requests, never the loop
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for row, (_, future) in enumerate(batch):
                if not future.done():
                    future.set_result(outputs[row])
