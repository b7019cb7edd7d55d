"""Rollouts and their rewards on disk, for offline training (dTRPO's offline mode, replays).

A store is a directory of shards, one per sampled batch::

    DIR/store.json              format version and shard count
    DIR/shard-00000.safetensors tensors: prompt ids/mask, group ids, completion ids/mask, unmask_step,
                                optional per-step tensors, reward total and components
    DIR/shard-00000.json        texts, references, reward reasons and weights, sampler settings

Shards are written atomically (temporary name, then rename). :func:`as_dataset` exposes a store as
a Hugging Face ``datasets.Dataset`` (one row per completion) for inspection or export to parquet.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .errors import RemaskError
from .records import PromptBatch, Rewards, Rollout

__all__ = ["RolloutStore", "as_dataset"]

FORMAT_VERSION = 1
_OPTIONAL = ("step_logps", "step_entropy", "step_all_eos", "greedy_ids")


class RolloutStore:
    """Append-only shards of (rollout, rewards) in ``directory``."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def __len__(self) -> int:
        return len(self.shards())

    def shards(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        out = []
        for p in self.directory.glob("shard-*.json"):
            idx = p.stem.split("-", 1)[1]
            if idx.isdigit() and (self.directory / f"shard-{idx}.safetensors").is_file():
                out.append(int(idx))
        return sorted(out)

    def write(self, index: int, rollout: Rollout, rewards: Rewards | None = None) -> Path:
        """Write one shard (replacing a shard of the same index)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        p = rollout.prompts
        tensors: dict[str, torch.Tensor] = {
            "prompt_ids": p.prompt_ids, "prompt_attention_mask": p.attention_mask, "group_ids": p.group_ids,
            "completion_ids": rollout.completion_ids, "completion_mask": rollout.completion_mask,
            "unmask_step": rollout.unmask_step,
        }
        for name in _OPTIONAL:
            value = getattr(rollout, name)
            if value is not None:
                tensors[name] = value
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "prompt_texts": list(p.texts), "references": [dict(r) for r in p.references],
            "example_ids": list(p.example_ids), "texts": list(rollout.texts),
            "block_length": rollout.block_length, "num_steps": rollout.num_steps, "nfe": rollout.nfe,
            "sampler": dict(rollout.sampler),
        }
        if rewards is not None:
            tensors["reward_total"] = rewards.total
            for name, vals in rewards.components.items():
                tensors[f"reward/{name}"] = vals
            meta["reward_names"] = list(rewards.components)
            meta["reward_reasons"] = {k: list(v) for k, v in rewards.reasons.items()}
            meta["reward_weights"] = dict(rewards.weights)
        stem = f"shard-{index:05d}"
        cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        tmp_t = self.directory / f".{stem}.safetensors.tmp"
        tmp_m = self.directory / f".{stem}.json.tmp"
        save_file(cpu, str(tmp_t))
        tmp_m.write_text(json.dumps(meta, default=str))
        os.replace(tmp_t, self.directory / f"{stem}.safetensors")
        os.replace(tmp_m, self.directory / f"{stem}.json")
        (self.directory / "store.json").write_text(json.dumps({"format_version": FORMAT_VERSION,
                                                               "shards": len(self.shards())}))
        return self.directory / f"{stem}.safetensors"

    def read(self, index: int, device: torch.device | str = "cpu") -> tuple[Rollout, Rewards | None]:
        """Shard ``index`` as a :class:`Rollout` and its stored :class:`Rewards` (None if none)."""
        stem = self.directory / f"shard-{index:05d}"
        if not Path(f"{stem}.json").is_file():
            raise RemaskError(f"{self.directory}: no rollout shard {index} (the store has {len(self)} shards)")
        meta = json.loads(Path(f"{stem}.json").read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise RemaskError(f"{stem}.json: rollout store format {meta.get('format_version')} is not {FORMAT_VERSION}")
        t = {k: v.to(device) for k, v in load_file(f"{stem}.safetensors").items()}
        prompts = PromptBatch(
            prompt_ids=t["prompt_ids"], attention_mask=t["prompt_attention_mask"], group_ids=t["group_ids"],
            texts=tuple(meta["prompt_texts"]), references=tuple(meta["references"]),
            example_ids=tuple(meta.get("example_ids", ())),
        )
        rollout = Rollout(
            prompts=prompts, completion_ids=t["completion_ids"], completion_mask=t["completion_mask"],
            unmask_step=t["unmask_step"], block_length=int(meta["block_length"]), num_steps=int(meta["num_steps"]),
            texts=tuple(meta["texts"]), nfe=int(meta["nfe"]), sampler=meta.get("sampler", {}),
            **{name: t[name] for name in _OPTIONAL if name in t},
        )
        rewards = None
        if "reward_total" in t:
            names = meta.get("reward_names", [])
            rewards = Rewards(
                total=t["reward_total"], components={n: t[f"reward/{n}"] for n in names},
                reasons={k: tuple(v) for k, v in meta.get("reward_reasons", {}).items()},
                weights=meta.get("reward_weights", {}),
            )
        return rollout, rewards


def as_dataset(directory: str | Path) -> Any:
    """A ``datasets.Dataset`` with one row per completion: shard, prompt, completion, reward, ..."""
    from datasets import Dataset

    store = RolloutStore(directory)
    rows: dict[str, list[Any]] = {"shard": [], "group_id": [], "prompt": [], "completion": [], "reward": [],
                                  "length": []}
    for idx in store.shards():
        rollout, rewards = store.read(idx)
        for b in range(rollout.batch_size):
            rows["shard"].append(idx)
            rows["group_id"].append(int(rollout.prompts.group_ids[b]))
            rows["prompt"].append(rollout.prompts.texts[b])
            rows["completion"].append(rollout.texts[b])
            rows["reward"].append(float(rewards.total[b]) if rewards is not None else float("nan"))
            rows["length"].append(int(rollout.lengths[b]))
    return Dataset.from_dict(rows)
