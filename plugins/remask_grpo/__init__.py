"""remask_grpo: GRPO and d1 / diffu-GRPO objectives and group-relative advantage estimators."""
