"""remask_egspo: built-in remask plugin."""
