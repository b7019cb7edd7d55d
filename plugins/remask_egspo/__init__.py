"""remask_egspo: EGSPO and EGSPO-SA (arXiv 2603.12554) as remask components.

Entropy-guided step selection, stepwise advantages from one-step greedy completions, and the
per-step clipped objective on exact transition log-probabilities. See docs/algorithms/egspo.md.
"""
