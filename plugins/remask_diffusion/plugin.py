"""Entry point of the remask_diffusion plugin: model adapters (`tiny`, `llada`, `dream`) and
samplers (`llada`, `dream`, `fast-dllm`)."""

from __future__ import annotations

import remask

from .dream import DreamModel
from .llada import LLaDAModel
from .samplers import DreamSampler, FastDLLMSampler, LLaDASampler
from .tiny import TinyDiffusionModel


@remask.hookimpl
def register_models(register):
    register(TinyDiffusionModel)
    register(LLaDAModel)
    register(DreamModel)


@remask.hookimpl
def register_samplers(register):
    register(LLaDASampler)
    register(DreamSampler)
    register(FastDLLMSampler)
