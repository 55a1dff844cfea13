"""LitServe serving the same checkpoint through the same decode, preprocess and forward code.

Only the serving layer differs from our service: ``decode_request`` calls
``model.preprocessing.prepare_input`` and ``predict`` calls ``Classifier.predict_probabilities``.
Configured as LitServe's docs recommend for CPU throughput: batching on (``max_batch_size``,
``batch_timeout``), one inference worker per core (``workers_per_device``) with torch threads
split between them, and the ZeroMQ queue (``fast_queue``) for hundreds of requests per second.

Run: ``python -m benchmarks.serving.litserve_app --checkpoint CKPT --port 8001``.
"""

from __future__ import annotations

import argparse
import os

import litserve as ls
import torch

from model.inference import Classifier
from model.preprocessing import prepare_input


class ClassifierAPI(ls.LitAPI):
    def __init__(self, checkpoint: str, precision: str, torch_threads: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.checkpoint = checkpoint
        self.precision = precision
        self.torch_threads = torch_threads

    def setup(self, device: str) -> None:
        torch.set_num_threads(self.torch_threads)
        self.classifier = Classifier.from_checkpoint(self.checkpoint, device, self.precision)
        self.classifier.warm_up((1, self.max_batch_size))

    def decode_request(self, request) -> torch.Tensor:
        upload = request["file"]
        data = upload.file.read() if hasattr(upload, "file") else upload
        return prepare_input(data, self.classifier.spec)

    def predict(self, x: torch.Tensor):
        return self.classifier.predict_probabilities(x)

    def unbatch(self, output) -> list:
        # What LitServe's default does once a server has set it up; explicit so the API is usable
        # (and testable) on its own.
        return list(output)

    def encode_response(self, output) -> dict:
        pred = self.classifier.interpret(output)
        return {
            "label": pred.label,
            "invasive": pred.invasive,
            "probability": pred.probability,
            "probabilities": pred.probabilities,
            "model_id": self.classifier.model_id,
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--accelerator", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-timeout", type=float, default=0.005, help="seconds")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="inference workers per device (LitServe: one per core on CPU)",
    )
    parser.add_argument(
        "--torch-threads", type=int, default=0, help="per worker; 0 = cores / workers"
    )
    parser.add_argument("--api-servers", type=int, default=0, help="0 = LitServe's default")
    parser.add_argument("--no-fast-queue", action="store_true")
    args = parser.parse_args(argv)

    threads = args.torch_threads or max(1, (os.cpu_count() or 1) // args.workers)
    api = ClassifierAPI(
        args.checkpoint,
        args.precision,
        threads,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout,
        api_path="/v1/predict",
    )
    server = ls.LitServer(
        api,
        accelerator=args.accelerator,
        workers_per_device=args.workers,
        fast_queue=not args.no_fast_queue,
        timeout=120,
    )
    server.run(
        host=args.host,
        port=args.port,
        num_api_servers=args.api_servers or None,
        log_level="warning",
        generate_client_file=False,
    )


if __name__ == "__main__":
    main()
