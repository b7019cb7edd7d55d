#!/bin/bash
# One node's launcher, run by `srun` from train.sbatch (once per node): accelerate launch with this
# node's rank. Reads SLURM_NNODES and SLURM_NODEID (set by srun), MASTER_ADDR, MASTER_PORT,
# GPUS_PER_NODE and optionally ACCELERATE_CONFIG. tests/distributed/test_launch.py runs this script
# as two "machines" on one CPU host (MASTER_ADDR=127.0.0.1, GPUS_PER_NODE=1).
#
#   bash examples/slurm/node.sh CONFIG [--section.field value ...]
set -euo pipefail

: "${SLURM_NNODES:?run under srun (or set SLURM_NNODES)}" "${SLURM_NODEID:?run under srun (or set SLURM_NODEID)}"
: "${MASTER_ADDR:?set MASTER_ADDR to the address of the first node}"
MASTER_PORT="${MASTER_PORT:-29500}"
GPUS_PER_NODE="${GPUS_PER_NODE:-8}"

args=(--num_machines "$SLURM_NNODES" --num_processes "$((SLURM_NNODES * GPUS_PER_NODE))"
      --machine_rank "$SLURM_NODEID" --main_process_ip "$MASTER_ADDR" --main_process_port "$MASTER_PORT")
if [[ -n "${ACCELERATE_CONFIG:-}" ]]; then
  args=(--config_file "$ACCELERATE_CONFIG" "${args[@]}")
else
  args=(--multi_gpu "${args[@]}")
fi

exec accelerate launch "${args[@]}" -m remask.cli train "$@"
