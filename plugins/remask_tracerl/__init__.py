"""remask_tracerl: TraceRL, trajectory-aware RL for dLLMs (arXiv 2509.06949, Gen-Verse/dLLM-RL), as a remask plugin."""
