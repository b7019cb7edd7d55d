"""remask_trafl: built-in remask plugin."""
