"""4x4 sudoku: the fixed cell-accuracy reward and a seeded generator of unique-solution puzzles.

The fixed reward reads the last ``<answer>`` block, removes whitespace and the separators ``, | ; -
_ .`` and requires exactly 16 cells of ``1-4``: a short answer is not zero-padded (d1 pads, giving
credit to prefixes), a long one is not truncated, and an answer that changes a given cell scores 0.
Otherwise the value is the fraction of the puzzle's empty cells filled correctly.
"""

from __future__ import annotations

import itertools
import random
from functools import lru_cache

from .text import answer_tag_span

_SEPARATORS = dict.fromkeys(map(ord, " \t\r\n,|;-_.`[]"), None)


def sudoku_verdict(text: str, puzzle: str, solution: str) -> tuple[float, str]:
    span = answer_tag_span(text)
    if span is None:
        return 0.0, "no-answer"
    cells = span.translate(_SEPARATORS)
    if not cells:
        return 0.0, "empty-answer"
    if len(cells) != 16:
        return 0.0, f"bad-length:{min(len(cells), 999)}"
    if any(c not in "1234" for c in cells):
        return 0.0, "not-a-grid"
    if any(p != "0" and p != c for p, c in zip(puzzle, cells)):
        return 0.0, "changed-given"
    empty = [i for i in range(16) if puzzle[i] == "0"]
    if not empty:
        return 0.0, "no-empty-cells"
    right = sum(1 for i in empty if cells[i] == solution[i])
    return right / len(empty), ("solved" if right == len(empty) else f"cells:{right}/{len(empty)}")


def _valid(grid: tuple[int, ...]) -> bool:
    for r in range(4):
        if len(set(grid[4 * r : 4 * r + 4])) != 4:
            return False
    for c in range(4):
        if len({grid[c + 4 * r] for r in range(4)}) != 4:
            return False
    for br, bc in itertools.product((0, 2), (0, 2)):
        if len({grid[4 * (br + i) + bc + j] for i in (0, 1) for j in (0, 1)}) != 4:
            return False
    return True


@lru_cache(maxsize=1)
def all_grids() -> tuple[str, ...]:
    """The 288 valid 4x4 sudoku grids as 16-character strings."""
    rows = list(itertools.permutations((1, 2, 3, 4)))
    out = []
    for combo in itertools.product(rows, repeat=4):
        grid = tuple(v for row in combo for v in row)
        if _valid(grid):
            out.append("".join(map(str, grid)))
    return tuple(out)


@lru_cache(maxsize=1)
def _cell_masks() -> tuple[tuple[int, ...], ...]:
    """``masks[cell][digit]``: bitmask over :func:`all_grids` of the grids with ``digit`` at ``cell``."""
    grids = all_grids()
    masks = [[0] * 5 for _ in range(16)]
    for k, g in enumerate(grids):
        for cell, ch in enumerate(g):
            masks[cell][int(ch)] |= 1 << k
    return tuple(tuple(m) for m in masks)


def count_solutions(puzzle: str) -> int:
    """Number of valid grids agreeing with the puzzle's givens (bitmask intersection)."""
    masks = _cell_masks()
    alive = (1 << len(all_grids())) - 1
    for cell, ch in enumerate(puzzle):
        if ch != "0":
            alive &= masks[cell][int(ch)]
    return bin(alive).count("1")


def solutions(puzzle: str) -> list[str]:
    return [g for g in all_grids() if all(p == "0" or p == c for p, c in zip(puzzle, g))]


def generate_puzzle(rng: random.Random, min_empty: int = 6, max_empty: int = 10) -> tuple[str, str]:
    """``(puzzle, solution)`` with ``min_empty..max_empty`` blanks and a unique solution."""
    grids = all_grids()
    while True:
        solution = rng.choice(grids)
        want = rng.randint(min_empty, max_empty)
        cells = list(range(16))
        rng.shuffle(cells)
        puzzle = list(solution)
        removed = 0
        for i in cells:
            if removed == want:
                break
            keep = puzzle[i]
            puzzle[i] = "0"
            if count_solutions("".join(puzzle)) == 1:
                removed += 1
            else:
                puzzle[i] = keep
        if removed == want:
            return "".join(puzzle), solution
