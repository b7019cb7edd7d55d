"""The remask engine: everything that is not algorithmic (see DESIGN.md).

* :func:`train` / :class:`Trainer` — RL post-training (``remask train``);
* :func:`sft` / :class:`SftTrainer` — masked-diffusion supervised fine-tuning (``remask sft``);
* :func:`evaluate` — held-out accuracy with the task's parser (reused by the comparison harness);
* :func:`build_pipeline` — components from a :class:`~remask.config.PipelineConfig`.
"""

from __future__ import annotations

from .components import Pipeline, ReferenceModel, RewardScorer, build_pipeline, make_reference
from .data import DataOrder, build_prompt_batch
from .evaluation import EvalResult, accuracy_summary, build_eval_sampler, evaluate
from .rng import RngStreams
from .sft import SftConfig, SftTrainer, load_sft_config, masked_diffusion_sft_loss, sft
from .trainer import Trainer, TrainResult, train

__all__ = [
    "Pipeline",
    "ReferenceModel",
    "RewardScorer",
    "build_pipeline",
    "make_reference",
    "DataOrder",
    "build_prompt_batch",
    "EvalResult",
    "accuracy_summary",
    "build_eval_sampler",
    "evaluate",
    "RngStreams",
    "SftConfig",
    "SftTrainer",
    "load_sft_config",
    "masked_diffusion_sft_loss",
    "sft",
    "Trainer",
    "TrainResult",
    "train",
]
