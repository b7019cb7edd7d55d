"""remask_dtrpo: built-in remask plugin."""
