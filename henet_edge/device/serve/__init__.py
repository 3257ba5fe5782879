"""``henet-edge serve``: the device classifier as a small HTTP service."""
