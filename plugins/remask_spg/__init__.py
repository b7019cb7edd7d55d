"""remask_spg: SPG, sandwiched policy gradient for dLLMs (arXiv 2510.09541), as a remask plugin."""
