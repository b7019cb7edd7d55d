"""remask_math: built-in remask plugin."""
