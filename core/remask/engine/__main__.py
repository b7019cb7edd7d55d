"""``python -m remask.engine COMMAND ...``: the same as ``python -m remask COMMAND ...``, for launchers
that were given this module::

    accelerate launch --config_file examples/accelerate/multi_gpu.yaml -m remask.engine train CONFIG

The engine never imports the CLI (the CLI sits on top); this launcher only runs ``remask``'s own
``__main__`` by name.
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("remask", run_name="__main__", alter_sys=True)
