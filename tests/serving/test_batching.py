"""The dynamic batcher's admission: images on their way (announced, still decoding) hold their place in the
bounded queue, so a full server refuses a request before it spends a decode on it."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from imgcls.serving.batching import DynamicBatcher, Overloaded


def test_announced_images_hold_queue_places_and_the_next_is_refused_before_decoding():
    async def scenario() -> list[np.ndarray]:
        batcher = DynamicBatcher(lambda images: images.sum(axis=(1, 2, 3), keepdims=False)[:, None], max_batch=2,
                                 max_wait_s=0.001, max_queue=2)
        await batcher.start()
        try:
            batcher.announce()
            batcher.announce()
            with pytest.raises(Overloaded):
                batcher.announce()  # two on their way fill a queue of two
            batcher.withdraw()  # one could not be decoded: its place is free again
            batcher.announce()
            images = [np.full((1, 2, 2), value, dtype=np.uint8) for value in (1, 2)]
            return await asyncio.gather(*(batcher.submit(image, announced=True) for image in images))
        finally:
            await batcher.stop()

    first, second = asyncio.run(scenario())
    assert first.tolist() == [4] and second.tolist() == [8]  # both admitted ones are answered, each its own
