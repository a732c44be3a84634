"""Sum of the distinct prime factors of every integer in [2, B): faithful, static-split and sieve.

Three ways to get the same number (B = 10^7 gives 5495501355056):

* faithful: ``sum(sympy.primefactors(n))`` for every number, the way users write it, mapped one
  item per number; the connector groups the numbers into chunks sized from measured times, which
  shrink towards the end, so every worker stays busy until the end;
* static split: job ``i`` of ``k`` takes ``range(2 + i, B, k)``, the common hand-written split.
  With k = 3 it is badly imbalanced: the multiples of 3 factor fastest (their cofactor is a third
  of the size) and sum to a quarter of the others (partial sums 2418248946959 / 659400211060 /
  2417852197037 at 10^7);
* fast: a compiled segmented sieve. Each prime p < B divides exactly ``(B - 1) // p`` numbers of
  [1, B), so the sum is ``sum(p * ((B - 1) // p))`` over the primes below B: no factoring at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache

from hpcbridge.client.bridge import Bridge

__all__ = ["sum_prime_factors", "distinct_prime_factor_sum", "sum_prime_factors_strided", "prime_contribution", "distinct_prime_factor_sums",
           "strided_job", "segment_contribution",
           "faithful_sum", "static_split_sums", "fast_sum", "FAST_MAX_UPPER", "SEGMENT"]

#: Above this, ``p * ((B - 1) // p)`` summed over a segment could overflow int64 in the sieve.
FAST_MAX_UPPER = 10**10
#: Numbers per sieve segment: 16 MiB of flags, one task each.
SEGMENT = 1 << 24


def sum_prime_factors(bounds: tuple[int, int]) -> int:
    """Sum of the distinct prime factors of every integer in ``range(*bounds)`` (sympy)."""
    return sum_prime_factors_strided(bounds[0], bounds[1], 1)


def split_range(start: int, stop: int, pieces: int) -> list[tuple[int, int]]:
    """``range(start, stop)`` as ``pieces`` contiguous ranges of near-equal length (empty ones dropped).

    >>> split_range(2, 12, 3)
    [(2, 6), (6, 9), (9, 12)]
    """
    size, extra = divmod(stop - start, pieces)
    bounds, low = [], start
    for index in range(pieces):
        high = low + size + (1 if index < extra else 0)
        bounds.append((low, high))
        low = high
    return [b for b in bounds if b[0] < b[1]]


def sum_prime_factors_strided(start: int, stop: int, step: int) -> int:
    """Sum of the distinct prime factors of every integer in ``range(start, stop, step)`` (sympy)."""
    from sympy import primefactors

    return sum(sum(primefactors(n)) for n in range(start, stop, step))


@cache
def _kernels():
    import numba
    import numpy as np

    @numba.njit(cache=True)
    def segment_sum(low: int, high: int, upper: int) -> int:
        # primes p in [low, high), each weighted by how many numbers below upper it divides
        low = max(low, 2)
        if high <= low:
            return 0
        root = int(math.sqrt(high - 1))
        while (root + 1) * (root + 1) <= high - 1:
            root += 1
        while root * root > high - 1:
            root -= 1
        small = np.ones(root + 1, np.bool_)
        segment = np.ones(high - low, np.bool_)
        for p in range(2, root + 1):
            if small[p]:
                for m in range(p * p, root + 1, p):
                    small[m] = False
                first = max(p * p, ((low + p - 1) // p) * p)
                for m in range(first, high, p):
                    segment[m - low] = False
        total = 0
        for i in range(high - low):
            if segment[i]:
                p = low + i
                total += p * ((upper - 1) // p)
        return total

    @numba.njit(cache=True)
    def per_number(upper: int):
        sums = np.zeros(upper, np.int64)
        for p in range(2, upper):
            if sums[p] == 0:  # no smaller prime divides p
                for m in range(p, upper, p):
                    sums[m] += p
        return sums

    return segment_sum, per_number


def prime_contribution(bounds: tuple[int, int], upper: int) -> int:
    """Sum of ``p * ((upper - 1) // p)`` over the primes p in ``range(*bounds)`` (compiled sieve)."""
    low, high = bounds
    if not 0 <= low <= high <= upper <= FAST_MAX_UPPER:
        raise ValueError(f"need 0 <= {low} <= {high} <= {upper} <= {FAST_MAX_UPPER}")
    return int(_kernels()[0](low, high, upper))


def distinct_prime_factor_sums(upper: int):
    """An int64 array whose entry n is the sum of the distinct prime factors of n, for n < upper.

    Entries 0 and 1 are 0. Holds 8 bytes per number: for checks and splits, not for large B.
    """
    return _kernels()[1](upper)


def distinct_prime_factor_sum(n: int) -> int:
    """``sum(sympy.primefactors(n))``: the faithful per-number function."""
    from sympy import primefactors

    return sum(primefactors(int(n)))


def faithful_sum(bridge: Bridge, upper: int, progress: bool = True) -> int:
    """The sympy sum over [2, upper), one item per number; the connector sizes the chunks."""
    run = bridge.map(distinct_prime_factor_sum, range(2, upper), stack=True, progress=progress)
    return int(bridge.gather(run, stack=True, progress=progress).sum())


def strided_job(job: Sequence[int]) -> int:
    """One job of the static split: ``job = (start, stop, step)``, e.g. a row of a MATLAB matrix."""
    start, stop, step = (int(v) for v in job)
    return sum_prime_factors_strided(start, stop, step)


def segment_contribution(segment: Sequence[int]) -> int:
    """The sieve's sum for ``segment = (low, high, upper)``, e.g. a row of a MATLAB matrix."""
    low, high, upper = (int(v) for v in segment)
    return prime_contribution((low, high), upper)


def static_split_sums(bridge: Bridge, upper: int, jobs: int = 3, progress: bool = True) -> list[int]:
    """The sympy sum split by hand: job i takes ``range(2 + i, upper, jobs)``; one partial sum each."""
    run = bridge.map(strided_job, [(2 + i, upper, jobs) for i in range(jobs)], chunk_size=1, progress=progress)
    return bridge.gather(run, progress=progress)


def fast_sum(bridge: Bridge, upper: int, segment: int = SEGMENT, progress: bool = True) -> int:
    """The sieve sum over [2, upper), one segment of primes per task."""
    if upper > FAST_MAX_UPPER:
        raise ValueError(f"upper {upper} is above {FAST_MAX_UPPER}, where the sieve's int64 sums could overflow")
    workers = max(1, bridge.n_workers)
    pieces = max(workers, math.ceil((upper - 2) / segment))
    segments = [(low, high, upper) for low, high in split_range(2, upper, pieces)]
    return sum(bridge.gather(bridge.map(segment_contribution, segments, chunk_size=1, progress=progress), progress=progress))
