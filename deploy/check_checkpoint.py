"""Exit 0 when the checkpoint the service will load is there and readable, else say what to do.

Run by the compose ``model-check`` service before ``api`` starts (the image copies this file to
/opt/invasive/). Without a checkpoint the API exits at once and its restart policy would restart
it forever; this check stops ``docker compose up`` with one clear message instead. It reads only
the checkpoint's header and metadata, through the same ``model.checkpoint`` code the service uses,
so it is quick and needs no GPU.
"""

from __future__ import annotations

import os
import sys

from model.checkpoint import CheckpointError, read_metadata

DEFAULT_CHECKPOINT = "/models/model.safetensors"

FIRST_RUN_HINT = (
    "First run? Put a checkpoint in the model volume, either by training one:\n"
    "  docker compose --profile train run --rm train fit --data /data "
    "--output /models/model.safetensors\n"
    "or, to try the service, a small demo checkpoint:\n"
    "  docker compose --profile train run --rm train demo --output /models/model.safetensors\n"
    "then: docker compose up -d"
)


def main() -> int:
    path = os.environ.get("INVASIVE_CHECKPOINT", DEFAULT_CHECKPOINT)
    try:
        metadata = read_metadata(path)
    except CheckpointError as exc:
        print(f"model-check: {exc}", file=sys.stderr)
        print(FIRST_RUN_HINT, file=sys.stderr)
        return 1
    demo = " (demo checkpoint)" if metadata.demo else ""
    print(f"model-check: {path} is a {metadata.arch} checkpoint for {metadata.class_names}{demo}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
