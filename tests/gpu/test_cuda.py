"""The CUDA paths, run where a GPU is present (skipped elsewhere: CI has none).

What must hold on a GPU host: the model on the GPU scores as it does on the CPU (fp32 within
2e-3: cuDNN may run fp32 convolutions in TF32; bf16 within 5e-2, the engines' start-up
tolerance), every GPU engine (cudagraphs, compile) serves without falling back and agrees with
eager at every batch size, interleaved, and the service on CUDA answers as offline scoring does.

Run them on a CUDA machine: ``python -m pytest tests/gpu -v -s`` (prints each difference).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from model.inference import Classifier
from model.preprocessing import prepare_input
from tests.app.images import jpeg_bytes

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

FP32_ON_GPU = 2e-3  # TF32 convolutions (cuDNN's default) against the CPU's fp32
LOW_PRECISION = 5e-2  # model.engines.LOW_PRECISION_TOLERANCE


@pytest.fixture(scope="module")
def photos(demo_checkpoint) -> torch.Tensor:
    spec = Classifier.from_checkpoint(demo_checkpoint, "cpu", "fp32").spec
    sizes = [(640, 480), (50, 40), (128, 128), (300, 200), (96, 72), (800, 600), (64, 64)]
    return torch.stack(
        [prepare_input(jpeg_bytes(size, seed=70 + i), spec) for i, size in enumerate(sizes)]
    )


@pytest.fixture(scope="module")
def cpu_reference(demo_checkpoint, photos) -> np.ndarray:
    return Classifier.from_checkpoint(demo_checkpoint, "cpu", "fp32").predict_probabilities(photos)


def _max_diff(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape and np.isfinite(got).all()
    return float(np.abs(got - want).max())


@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", FP32_ON_GPU),
                                                      ("auto", LOW_PRECISION)])
def test_model_on_gpu_matches_cpu(demo_checkpoint, photos, cpu_reference, precision, tolerance):
    clf = Classifier.from_checkpoint(demo_checkpoint, "cuda", precision)
    assert clf.device.type == "cuda"
    assert next(clf.model.parameters()).device.type == "cuda"
    diff = _max_diff(clf.predict_probabilities(photos), cpu_reference)
    print(f"eager {clf.precision} on {torch.cuda.get_device_name()}: max |p - cpu fp32| {diff:.2e}")
    assert diff <= tolerance


@pytest.mark.parametrize("engine", ["cudagraphs", "compile"])
def test_gpu_engine_serves_and_agrees_at_every_batch_size(demo_checkpoint, photos, cpu_reference,
                                                         engine, tmp_path):
    clf = Classifier.from_checkpoint(demo_checkpoint, "cuda", "auto", engine=engine,
                                     cache_dir=tmp_path)
    info = clf.engine_info
    assert (info.name, info.fallback_reason) == (engine, None), info.fallback_reason
    eager = Classifier.from_checkpoint(demo_checkpoint, "cuda", "auto")
    # Interleaved sizes: a replayed graph must not hand back another size's (shared) buffers.
    worst = 0.0
    for n in (1, 7, 3, 1, 7, 2, 3):
        got = clf.predict_probabilities(photos[:n])
        worst = max(worst, _max_diff(got, cpu_reference[:n]))
        assert _max_diff(got, eager.predict_probabilities(photos[:n])) <= LOW_PRECISION
    print(f"{engine} {clf.precision}: max |p - cpu fp32| {worst:.2e}, "
          f"conversion {info.conversion_seconds:.2f} s")
    assert worst <= LOW_PRECISION


def test_cudagraphs_keeps_earlier_results_intact(demo_checkpoint, photos):
    """The result of one call is a copy: the next replay does not overwrite it."""
    clf = Classifier.from_checkpoint(demo_checkpoint, "cuda", "fp32", engine="cudagraphs")
    first = clf.engine.run(photos[:2].cuda())
    kept = first.clone()
    clf.engine.run(photos[2:4].cuda())
    torch.testing.assert_close(first, kept, rtol=0, atol=0)


@pytest.mark.parametrize("engine", ["eager", "cudagraphs"])
def test_service_on_gpu_matches_offline_scoring(demo_checkpoint, engine):
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

    from app.main import create_app
    from tests.app.conftest import isolated_settings

    settings = isolated_settings(demo_checkpoint, device="cuda", precision="fp32", engine=engine)
    offline = Classifier.from_checkpoint(demo_checkpoint, "cuda", "fp32")
    files = {f"p{i}.jpg": jpeg_bytes(size, seed=90 + i)
             for i, size in enumerate([(640, 480), (50, 40), (300, 200)])}
    with TestClient(create_app(settings), raise_server_exceptions=False) as service:
        model = service.get("/v1/model").json()
        assert model["device"].startswith("cuda"), model
        running = service.app.state.runtime.classifier.engine
        assert running.name == engine
        if engine == "cudagraphs":  # warm-up recorded every batch size: no request pays one
            assert running.graph_count == settings.max_batch_size
        for name, data in files.items():
            response = service.post("/v1/predict", files={"file": (name, data, "image/jpeg")})
            assert response.status_code == 200, response.text
            got = np.array(list(response.json()["probabilities"].values()))
            want = offline.predict_probabilities(prepare_input(data, offline.spec)[None])[0]
            np.testing.assert_allclose(got, want, atol=FP32_ON_GPU, err_msg=name)
        batch = service.post(
            "/v1/predict/batch", files=[("files", (n, d, "image/jpeg")) for n, d in files.items()]
        )
        assert batch.status_code == 200, batch.text
        assert len(batch.json()["results"]) == len(files)
