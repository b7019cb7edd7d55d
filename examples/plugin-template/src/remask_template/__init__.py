"""remask-template: a minimal third-party remask plugin to copy from."""
