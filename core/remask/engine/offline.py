"""``remask rollouts``: sample and score batches with the pipeline and store them (offline mode).

Training with ``train.offline_rollouts: DIR`` then reads batch ``k mod N`` of the store at rollout
``k`` instead of sampling, and uses the stored rewards.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..config import PipelineConfig
from ..registry import Registry, get_registry
from ..rollout_store import RolloutStore
from .components import RewardScorer, build_pipeline
from .data import DataOrder, build_prompt_batch
from .rng import RngStreams

__all__ = ["write_rollouts"]


def write_rollouts(config: PipelineConfig, out: str | Path, *, batches: int | None = None,
                   registry: Registry | None = None, device: Any = None) -> int:
    """Sample ``batches`` batches of ``prompts_per_step x group_size`` rows (default: as many as
    ``remask train`` would sample) with the training data order and sampling stream; return the count."""
    t = config.train
    n = batches if batches is not None else math.ceil(t.max_steps / t.inner_steps)
    pipe = build_pipeline(config, registry or get_registry())
    model = pipe.model
    dev = torch.device(device) if device is not None else (torch.device("cuda") if torch.cuda.is_available()
                                                            else torch.device("cpu"))
    model.module.to(dev)
    model.module.eval()
    examples = list(pipe.task.examples("train"))
    data = DataOrder(len(examples), t.seed)
    rng = RngStreams(t.seed, device=dev)
    scorer = RewardScorer(pipe.rewards)
    store = RolloutStore(out)
    try:
        for k in range(n):
            idx = data.take(t.prompts_per_step)
            prompts = build_prompt_batch(model, [examples[i] for i in idx], group_size=t.group_size,
                                         first_group_id=k * t.prompts_per_step, device=dev)
            with torch.no_grad():
                rollout = pipe.sampler.sample(model, prompts, rng.sampling)
            store.write(k, rollout, scorer(prompts, rollout.texts))
    finally:
        pipe.close()
    return n
