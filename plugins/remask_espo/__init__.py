"""remask_espo: ESPO, ELBO-based sequence-level policy optimization (arXiv 2512.03759), as a remask plugin."""
