"""``python -m training <command>``: the same CLI as the ``invasive-train`` console script.

Under ``torchrun`` (which sets ``TORCHELASTIC_RUN_ID`` in every worker) ``@record`` makes an
uncaught exception part of torchrun's failure summary (its error file). Elsewhere it would only
turn on ``faulthandler``, which this does without importing torch (seconds on every ``--help``).
"""

import faulthandler
import os

from training.cli import main

if __name__ == "__main__":
    if "TORCHELASTIC_RUN_ID" in os.environ:
        from torch.distributed.elastic.multiprocessing.errors import record

        raise SystemExit(record(main)())
    faulthandler.enable()
    raise SystemExit(main())
