"""``python -m remask.engine COMMAND ...``: the ``remask`` CLI as a module, for launchers that take a
module rather than a script::

    accelerate launch --config_file examples/accelerate/multi_gpu.yaml -m remask.engine train CONFIG

(``-m remask.cli`` would run the CLI module as ``__main__``, a second copy that the subcommand
modules do not register into.)
"""

import sys

from remask.cli import main

if __name__ == "__main__":
    sys.exit(main())
