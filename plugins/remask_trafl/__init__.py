"""remask_trafl: TraFL (trajectory flow balancing) for masked diffusion LMs, as a remask plugin."""
