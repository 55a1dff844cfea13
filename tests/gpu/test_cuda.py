"""The CUDA paths, run where a GPU is present (skipped elsewhere: CI has none).

What must hold on a GPU host: the model on the GPU scores as it does on the CPU (fp32 within
2e-3: cuDNN may run fp32 convolutions in TF32; bf16 within 5e-2, the engines' start-up
tolerance), every GPU engine (cudagraphs, compile) serves without falling back and agrees with
eager at every batch size, interleaved, and the service on CUDA answers as offline scoring does.

Run them on a CUDA machine: ``python -m pytest tests/gpu -v -s`` (prints each difference).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

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


def _service(settings):
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

    from app.main import create_app

    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.mark.parametrize(("engine", "jpeg_decode"), [("eager", "processes"),
                                                     ("cudagraphs", "processes"),
                                                     ("cudagraphs", "batch")])
def test_service_on_gpu_matches_offline_scoring(demo_checkpoint, engine, jpeg_decode):
    from tests.app.conftest import isolated_settings
    from tests.app.images import field_photo
    from tests.app.test_device_decode import jpeg

    settings = isolated_settings(demo_checkpoint, device="cuda", precision="fp32", engine=engine,
                                 jpeg_decode=jpeg_decode)
    offline = Classifier.from_checkpoint(demo_checkpoint, "cuda", "fp32")
    files = {f"p{i}.jpg": jpeg(field_photo(size, seed=90 + i))
             for i, size in enumerate([(640, 480), (50, 40), (300, 200), (4032, 3024)])}
    files["blocks.jpg"] = jpeg_bytes((640, 480), seed=95)  # hard 8x8 edges: the worst case
    # nvJPEG (full size, block average) against Pillow's scaled IDCT: 0.1-0.45 grey levels
    tolerance = 2e-2 if jpeg_decode == "batch" else FP32_ON_GPU
    with _service(settings) as service:
        model = service.get("/v1/model").json()
        assert model["device"].startswith("cuda"), model
        assert model["jpeg_decoding"] == jpeg_decode
        running = service.app.state.runtime.classifier.engine
        assert running.name == engine
        if engine == "cudagraphs":  # warm-up recorded every batch size: no request pays one
            assert running.graph_count == settings.max_batch_size
        worst = 0.0
        for name, data in files.items():
            response = service.post("/v1/predict", files={"file": (name, data, "image/jpeg")})
            assert response.status_code == 200, response.text
            got = np.array(list(response.json()["probabilities"].values()))
            want = offline.predict_probabilities(prepare_input(data, offline.spec)[None])[0]
            worst = max(worst, float(np.abs(got - want).max()))
            np.testing.assert_allclose(got, want, atol=tolerance, err_msg=name)
        print(f"service {engine}, JPEGs decoded in {jpeg_decode}: max |p - offline| {worst:.2e}")
        batch = service.post(
            "/v1/predict/batch", files=[("files", (n, d, "image/jpeg")) for n, d in files.items()]
        )
        assert batch.status_code == 200, batch.text
        assert len(batch.json()["results"]) == len(files)


def test_nvjpeg_gives_the_cpu_paths_pixels():
    from model.device_jpeg import decode_batch
    from model.inspection import inspect_image
    from model.preprocessing import PreprocessSpec, prepare_pixels
    from tests.app.images import field_photo
    from tests.app.test_device_decode import jpeg

    images = [jpeg(field_photo(size, seed=i)) for i, size in
              enumerate([(160, 120), (800, 600), (1200, 1000), (2000, 1500), (4032, 3024)])]
    images.append(_rotated(images[1]))
    orientations = [inspect_image(data, 224).orientation for data in images]
    decoded = decode_batch(images, orientations, 224, torch.device("cuda"))
    for data, got in zip(images, decoded, strict=True):
        assert got is not None and got.device.type == "cuda"
        want = prepare_pixels(data, PreprocessSpec(224)).astype(np.int16)
        diff = np.abs(got.permute(1, 2, 0).cpu().numpy().astype(np.int16) - want)
        print(f"nvJPEG {Image.open(io.BytesIO(data)).size}: mean |diff| {diff.mean():.3f}, "
              f"p99 {np.percentile(diff, 99):.0f}")
        assert diff.mean() < 0.75 and np.percentile(diff, 99) <= 4


def _rotated(data: bytes) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buffer, format="JPEG", quality=90, exif=exif.tobytes())
    return buffer.getvalue()


def test_hostile_jpegs_on_nvjpeg_get_the_answers_the_processes_give(demo_checkpoint):
    from tests.app.conftest import isolated_settings
    from tests.app.test_device_decode import hostile_jpegs

    settings = {d: isolated_settings(demo_checkpoint, device="cuda", jpeg_decode=d)
                for d in ("processes", "batch")}
    with _service(settings["processes"]) as by_processes, _service(settings["batch"]) as on_gpu:
        for name, data in hostile_jpegs().items():
            want = by_processes.post("/v1/predict", files={"file": ("x.jpg", data)})
            got = on_gpu.post("/v1/predict", files={"file": ("x.jpg", data)})
            print(f"hostile {name}: processes {want.status_code}, nvJPEG {got.status_code}")
            assert got.status_code == want.status_code, (name, got.text, want.text)
        assert on_gpu.get("/health/ready").status_code == 200  # the GPU is still fine
