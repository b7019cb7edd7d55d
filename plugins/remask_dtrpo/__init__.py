"""remask_dtrpo: dTRPO (trajectory reduction policy optimization) as a remask plugin."""
