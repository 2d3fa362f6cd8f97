"""The random draws of a comparison: the bootstrap resamples (rows, and seeds within each
group), the permutations' swaps of two models' predictions, and the random splits of two
seed groups. Each kind of draw has its own stream of one SeedSequence, so the same --seed
draws the same numbers whatever else is drawn. Public, so that a test can replay exactly
the same resamples.
"""
import itertools
import math

import numpy as np

# Resamples x rows held in memory at once (about 20 MB per array of them).
ELEMENTS_PER_CHUNK = 2_500_000


def chunk_sizes(resamples: int, rows: int) -> list[int]:
    """How many resamples are drawn and scored at once: rows x chunk stays near
    ELEMENTS_PER_CHUNK."""
    size = max(1, min(resamples, ELEMENTS_PER_CHUNK // max(rows, 1)))
    return [min(size, resamples - start) for start in range(0, resamples, size)]


def _generator(seed: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.SFC64(np.random.SeedSequence([seed, stream])))


def draw_resamples(rows: int, resamples: int, seed: int = 0, seeds_a: int = 1, seeds_b: int = 1):
    """The bootstrap resamples, chunk by chunk (chunk_sizes): yields (picked rows: an int
    array [chunk, rows] of row numbers drawn with replacement; A's drawn seeds [chunk,
    seeds_a] and B's [chunk, seeds_b], indices into each group drawn with replacement).
    Rows and seeds come from separate streams, so the rows drawn do not depend on the group
    sizes."""
    picks, a_seeds, b_seeds = _generator(seed, 0), _generator(seed, 1), _generator(seed, 2)
    for size in chunk_sizes(resamples, rows):
        yield (picks.integers(0, rows, size=(size, rows), dtype=np.intp),
               a_seeds.integers(0, seeds_a, size=(size, seeds_a)),
               b_seeds.integers(0, seeds_b, size=(size, seeds_b)))


def draw_swaps(rows: int, resamples: int, seed: int = 0):
    """The permutations, chunk by chunk: yields bool arrays [chunk, rows], True where A's and
    B's predictions of a row are swapped (probability 1/2 each, independently). `rows` are
    the rows where A and B predict differently (a swap elsewhere changes nothing)."""
    generator = _generator(seed, 3)
    width = 8 * math.ceil(rows / 64)  # bytes per permutation: whole 64-bit draws
    for size in chunk_sizes(resamples, rows):
        raw = np.frombuffer(generator.bytes(size * width), np.uint8).reshape(size, width)
        yield np.unpackbits(raw, axis=1, count=rows).view(bool)


def seed_splits(seeds_a: int, seeds_b: int, resamples: int, seed: int = 0):
    """The splits of seeds_a + seeds_b experiments into groups of seeds_a and seeds_b that
    the seed permutation test uses: (bool array [splits, all], True: in A; exact: whether it
    is every split, the observed one included, rather than random ones)."""
    total = seeds_a + seeds_b
    if math.comb(total, seeds_a) <= resamples:
        chosen = np.zeros((math.comb(total, seeds_a), total), dtype=bool)
        for row, members in enumerate(itertools.combinations(range(total), seeds_a)):
            chosen[row, list(members)] = True
        return chosen, True
    order = np.argsort(_generator(seed, 4).random((resamples, total)), axis=1)
    chosen = np.zeros((resamples, total), dtype=bool)
    np.put_along_axis(chosen, order[:, :seeds_a], True, axis=1)
    return chosen, False
