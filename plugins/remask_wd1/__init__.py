"""remask_wd1: wd1, weighted policy optimization for dLLMs (arXiv 2507.08838), as a remask plugin."""
