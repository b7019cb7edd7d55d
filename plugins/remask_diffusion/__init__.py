"""remask_diffusion: built-in remask plugin."""
