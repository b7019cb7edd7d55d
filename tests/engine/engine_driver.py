"""Runs a training job over the engine test fakes in a fresh process (for kill tests).

    python engine_driver.py RUN_DIR MAX_STEPS [--resume] [--die-in-checkpoint N]

``--die-in-checkpoint N`` SIGKILLs the process while the N-th checkpoint is being written (after
its weights, before its trainer_state.json).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).parent))

import engine_fakes  # noqa: E402

from remask.config import parse_config  # noqa: E402
from remask.engine import checkpoint as ckpt  # noqa: E402
from remask.engine import train  # noqa: E402
from remask.testing import registered_plugin  # noqa: E402


def main() -> None:
    run_dir, max_steps = sys.argv[1], int(sys.argv[2])
    resume = "latest" if "--resume" in sys.argv else None
    if "--die-in-checkpoint" in sys.argv:
        die_at = int(sys.argv[sys.argv.index("--die-in-checkpoint") + 1])
        real = ckpt.write_json
        count = {"n": 0}

        def dying_write_json(path, data):
            if path.name == ckpt.TRAINER_STATE:
                count["n"] += 1
                if count["n"] == die_at:
                    os.kill(os.getpid(), signal.SIGKILL)
            real(path, data)

        ckpt.write_json = dying_write_json
    raw = engine_fakes.driver_config(run_dir, max_steps)
    with registered_plugin(engine_fakes.plugin(), name="engine-test-fakes"):
        result = train(parse_config(raw), resume=resume)
    print("DONE", result["global_step"], flush=True)


if __name__ == "__main__":
    main()
