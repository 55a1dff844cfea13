"""The FastAPI image classifier as tutorials write it: where a hand-rolled service starts.

``async def`` endpoint doing everything inline on the event loop: full-size PIL decode,
torchvision Resize + ToTensor + Normalize, fp32, NCHW, batch of one (on CUDA when present).
Deliberately unoptimised; only the checkpoint loading is ours (the weights must be the same).

Run: ``python -m benchmarks.serving.naive_app --checkpoint CKPT --port 8002``.
"""

from __future__ import annotations

import argparse
import io

import torch
import uvicorn
from fastapi import FastAPI, File, UploadFile
from PIL import Image
from torchvision import transforms

from model.checkpoint import load_checkpoint


def create_app(checkpoint: str, device: str = "auto") -> FastAPI:
    if device == "auto":  # the tutorial line
        device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = load_checkpoint(checkpoint)
    model = loaded.model.eval().to(device)
    meta = loaded.metadata
    transform = transforms.Compose(
        [
            transforms.Resize((meta.input_size, meta.input_size)),
            transforms.ToTensor(),
            transforms.Normalize(meta.mean, meta.std),
        ]
    )
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.post("/v1/predict")
    async def predict(file: UploadFile = File(...)) -> dict:  # noqa: B008 - FastAPI idiom
        data = await file.read()
        image = Image.open(io.BytesIO(data)).convert("RGB")
        x = transform(image).unsqueeze(0).to(device)
        with torch.no_grad():
            probs = torch.softmax(model(x), dim=1)[0].tolist()
        best = max(range(len(probs)), key=probs.__getitem__)
        return {
            "label": meta.class_names[best],
            "probabilities": dict(zip(meta.class_names, probs, strict=True)),
        }

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--device", default="auto", help="auto: cuda when present, else cpu")
    args = parser.parse_args(argv)
    uvicorn.run(
        create_app(args.checkpoint, args.device),
        host=args.host,
        port=args.port,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
