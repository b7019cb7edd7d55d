"""MDPO (Masked Diffusion Policy Optimization, arXiv 2508.13148) as a remask plugin."""
