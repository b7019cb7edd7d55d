"""Turn a stored preference dataset into a remask rollout store for offline dTRPO.

    python examples/offline-dtrpo/make_preference_store.py examples/offline-dtrpo/preferences.yaml \
        --data examples/offline-dtrpo/arith-preferences.jsonl --out runs/arith-preference-store

The dataset is any local file ``datasets`` reads (``.jsonl``/``.json``, ``.parquet``, ``.csv``) with
one preference per row: a prompt, a chosen and a rejected completion (column names are options).
Every pair becomes a group of G = 2 rows (chosen first, reward 1; rejected, reward 0). The
completions are tokenised with the config's model adapter, end with EOS and are padded with EOS to
the sampler's ``gen_length``; ``block_length`` and ``steps`` come from the sampler section too.
Nothing records how the completions were unmasked, so ``unmask_step`` is -1 ("not recorded"):
objective ``dtrpo`` (``trajectory: auto``) then draws schedule-matched trajectories (random order,
the sampler's schedule; docs/algorithms/dtrpo.md states the assumption). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import remask
from remask.config import load_config, parse_override_args
from remask.engine.data import build_prompt_batch, encode_text
from remask.registry import get_registry
from remask.rollout_store import RolloutStore

_READERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def load_rows(path: str) -> list[dict]:
    """Rows of a local dataset file, through ``datasets`` (no network)."""
    from datasets import load_dataset

    kind = _READERS.get(Path(path).suffix)
    if kind is None:
        raise remask.RemaskError(f"--data {path}: unknown file type; use one of {', '.join(sorted(_READERS))}")
    if not Path(path).is_file():
        raise remask.RemaskError(f"--data {path}: no such file")
    return list(load_dataset(kind, data_files=path, split="train"))


def completion_tensors(model: remask.DiffusionModel, texts: list[str], gen_length: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(ids [B, L], mask [B, L] through the first EOS, rows cut at L)``: text + EOS, EOS-padded."""
    eos = model.eos_token_id
    ids = torch.full((len(texts), gen_length), eos, dtype=torch.long)
    cut = 0
    for r, text in enumerate(texts):
        tokens = encode_text(model.tokenizer, text)[:gen_length]
        cut += len(tokens) == gen_length
        ids[r, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
    is_eos = ids == eos  # [B, L]
    first = torch.where(is_eos.any(-1), is_eos.float().argmax(-1), torch.full((len(texts),), gen_length - 1))
    mask = torch.arange(gen_length).unsqueeze(0) <= first.unsqueeze(-1)  # [B, L]
    return ids, mask, cut


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config", help="pipeline YAML (model, sampler and train.prompts_per_step are used)")
    p.add_argument("--data", required=True, help="local .jsonl/.json/.parquet/.csv file of preference pairs")
    p.add_argument("--out", required=True, help="directory of the rollout store to write")
    p.add_argument("--prompt-column", default="prompt")
    p.add_argument("--chosen-column", default="chosen")
    p.add_argument("--rejected-column", default="rejected")
    args, extra = p.parse_known_args(argv)
    try:
        cfg = load_config(args.config, parse_override_args(extra))  # e.g. --model.path random
        if cfg.train.group_size != 2:
            raise remask.RemaskError(f"{args.config}: train.group_size must be 2 for preference pairs "
                                     f"(got {cfg.train.group_size})")
        sampler = cfg.sampler.params
        gen_length = int(sampler.gen_length)
        block_length = int(getattr(sampler, "block_length", gen_length))
        steps = int(sampler.steps)
        model = get_registry().get("model", cfg.model.name)(cfg.model.params)
        rows = load_rows(args.data)
        for col in (args.prompt_column, args.chosen_column, args.rejected_column):
            if rows and col not in rows[0]:
                raise remask.RemaskError(f"--data {args.data}: no column {col!r} (columns: {', '.join(rows[0])})")
    except remask.RemaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    per_shard = cfg.train.prompts_per_step
    store = RolloutStore(args.out)
    shards, cut = 0, 0
    for k, start in enumerate(range(0, len(rows) - per_shard + 1, per_shard)):
        chunk = rows[start : start + per_shard]
        examples = [remask.Example(prompt=str(r[args.prompt_column]), reference={}, id=f"pref-{start + j}")
                    for j, r in enumerate(chunk)]
        prompts = build_prompt_batch(model, examples, group_size=2, first_group_id=start)
        texts = [str(r[c]) for r in chunk for c in (args.chosen_column, args.rejected_column)]
        ids, mask, n_cut = completion_tensors(model, texts, gen_length)
        cut += n_cut
        rollout = remask.Rollout(
            prompts=prompts, completion_ids=ids, completion_mask=mask,
            unmask_step=torch.full_like(ids, -1),  # not recorded: dtrpo draws schedule-matched trajectories
            block_length=block_length, num_steps=steps, texts=tuple(model.decode(ids, mask)), nfe=0,
            sampler={"name": "preference-dataset", "source": str(args.data)},
        )
        rewards = remask.Rewards.from_scores("preference", [1.0, 0.0] * len(chunk), ["chosen", "rejected"] * len(chunk))
        store.write(k, rollout, rewards)
        shards += 1
    dropped = len(rows) - shards * per_shard
    print(f"wrote {shards} shards of {per_shard} pairs to {args.out}"
          + (f"; {dropped} trailing pairs dropped" if dropped else "")
          + (f"; {cut} completions cut at gen_length {gen_length}" if cut else ""))
    return 0 if shards else 2


if __name__ == "__main__":
    raise SystemExit(main())
