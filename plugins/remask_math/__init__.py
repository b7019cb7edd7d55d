"""remask_math: math, countdown and sudoku verifiers, format rewards and synthetic tasks."""
