"""remask_vrpo: VRPO, LLaDA 1.5's variance-reduced preference optimization (arXiv 2505.19223), as a remask plugin."""
