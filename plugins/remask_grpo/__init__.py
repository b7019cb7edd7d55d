"""remask_grpo: built-in remask plugin."""
