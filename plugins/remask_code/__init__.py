"""remask_code: built-in remask plugin."""
