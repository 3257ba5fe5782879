"""Pure-Python architecture arithmetic: group pairs and spatial sizes (no TensorFlow)."""

from __future__ import annotations

import math


def group_pair(width: int) -> tuple[int, int]:
    """The paper's rule: the two nearest divisors ``m * n == width`` with ``m > n``.

    >>> group_pair(24), group_pair(48), group_pair(96)
    ((6, 4), (8, 6), (12, 8))
    """
    if width < 2:
        raise ValueError(f"width must be at least 2, got {width}")
    for n in range(math.isqrt(width), 0, -1):
        if width % n == 0 and width // n > n:
            return width // n, n
    raise ValueError(f"width {width} has no divisor pair m * n with m > n")  # pragma: no cover


def check_input_size(input_size: int, stride2_convs: int = 4) -> None:
    """Raise ValueError unless ``input_size`` reaches 1x1 through valid 3x3 stride-2 convs."""
    size = input_size
    for _ in range(stride2_convs):
        if size < 3:
            break
        size = (size - 3) // 2 + 1
    if size != 1:
        raise ValueError(
            f"input size {input_size} does not reduce to 1x1 through {stride2_convs} "
            f"unpadded 3x3 stride-2 convolutions (sizes {_reducing_sizes(stride2_convs)} do; "
            "the paper uses 31)"
        )


def scaled_width(base: int, multiplier: float, divisor: int = 2) -> int:
    """Scale a stage width by ``multiplier``, keeping it a multiple of ``divisor``."""
    width = round(base * multiplier / divisor) * divisor
    return max(width, divisor * 2)


def _reducing_sizes(stride2_convs: int) -> str:
    low, high = 1, 1
    for _ in range(stride2_convs):
        low, high = 2 * low + 1, 2 * high + 2
    return f"{low} to {high}"
