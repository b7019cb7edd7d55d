"""remask_coupled_grpo: Coupled-GRPO (DiffuCoder, arXiv 2506.20639) as a remask plugin."""
