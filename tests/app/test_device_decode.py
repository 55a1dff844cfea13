"""``INVASIVE_JPEG_DECODE=batch``: plain JPEGs decoded in the batch by the inference thread.

On this CPU-only box that is Pillow in the inference thread (no hand-off to a decode process);
on CUDA it is nvJPEG (``model.device_jpeg``, its own tests, and ``tests/gpu/test_cuda.py``). The
path between upload and answer is the same: what these tests hold it to.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app.pipeline import PredictionPipeline
from tests.app.conftest import expected_probabilities
from tests.app.images import encode, field_photo, photo


def jpeg(img: Image.Image, **save) -> bytes:
    return encode(img, "JPEG", quality=90, **save)


@pytest.fixture
def device_decodes(monkeypatch) -> list[int]:
    """Counts the images the pipeline decodes in the batch (on the CPU: one call each)."""
    calls: list[int] = []
    real = PredictionPipeline._decode_here

    def counting(self, data):
        calls.append(1)
        return real(self, data)

    monkeypatch.setattr(PredictionPipeline, "_decode_here", counting)
    return calls


def probabilities(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array(list(response.json()["probabilities"].values()))


def test_plain_jpegs_are_decoded_on_the_device_and_score_as_offline(
    client_for, reference_classifier, device_decodes
):
    service = client_for(jpeg_decode="batch")
    assert device_decodes == [1, 1]  # warm-up
    device_decodes.clear()
    assert service.get("/v1/model").json()["jpeg_decoding"] == "batch"
    for seed, size in enumerate([(640, 480), (300, 400), (50, 40)]):
        data = jpeg(field_photo(size, seed))
        got = probabilities(service.post("/v1/predict", files={"file": ("a.jpg", data)}))
        want = expected_probabilities(reference_classifier, data)
        # the same Pillow decode as offline, in another thread: the same figure (nvJPEG on
        # CUDA differs by 0.1-0.2 grey levels: tests/gpu)
        np.testing.assert_allclose(got, want, atol=1e-4)
    assert sum(device_decodes) == 3


def test_a_mixed_batch_keeps_its_order_and_other_formats_decode_as_before(
    client_for, reference_classifier, device_decodes
):
    service = client_for(jpeg_decode="batch")
    device_decodes.clear()
    files = {
        "plain.jpg": jpeg(field_photo((400, 300), 1)),
        "tile.png": encode(field_photo((128, 128), 2), "PNG"),
        "progressive.jpg": jpeg(field_photo((400, 300), 3), progressive=True),
        "plain2.jpg": jpeg(field_photo((320, 240), 4)),
        "phone.heic": encode(field_photo((300, 200), 5), "HEIF", quality=90),
    }
    response = service.post(
        "/v1/predict/batch", files=[("files", (n, d, "image/jpeg")) for n, d in files.items()]
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["filename"] for r in results] == list(files)
    for result, (name, data) in zip(results, files.items(), strict=True):
        got = np.array(list(result["prediction"]["probabilities"].values()))
        want = expected_probabilities(reference_classifier, data)
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=name)
    assert sum(device_decodes) == 2  # only the two plain JPEGs


def test_a_jpeg_the_device_decoder_fails_on_is_decoded_by_the_processes(
    client_for, reference_classifier, monkeypatch
):
    failed: list[int] = []

    def failing(self, data):
        failed.append(1)
        return None

    monkeypatch.setattr(PredictionPipeline, "_decode_here", failing)
    service = client_for(jpeg_decode="batch")
    failed.clear()  # warm-up's
    data = jpeg(field_photo((640, 480), 7))
    got = probabilities(service.post("/v1/predict", files={"file": ("a.jpg", data)}))
    # decoded by Pillow the second time: exactly the offline figure
    np.testing.assert_allclose(got, expected_probabilities(reference_classifier, data), atol=1e-4)
    assert failed == [1]

    batch = service.post(
        "/v1/predict/batch",
        files=[("files", ("a.jpg", data)), ("files", ("b.png", encode(photo(), "PNG")))],
    )
    assert batch.status_code == 200
    assert all(r["prediction"] for r in batch.json()["results"])


def hostile_jpegs() -> dict[str, bytes]:
    good = jpeg(field_photo((400, 300), 9))
    start_of_scan = good.index(b"\xff\xda")
    return {
        "cut_short": good[: len(good) // 2],
        "cut_then_eoi": good[: len(good) // 2] + b"\xff\xd9",
        "garbage_scan": good[: start_of_scan + 14] + bytes(range(256)) * 8 + b"\xff\xd9",
        "no_frame": good[:20] + b"\xff\xd9",
        "empty": b"",
        "cmyk": jpeg(field_photo((64, 48), 1).convert("CMYK")),
        "orientation_9": _with_orientation(good, 9),
    }


def _with_orientation(data: bytes, value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buffer, format="JPEG", quality=90, exif=exif.tobytes())
    return buffer.getvalue()


def test_hostile_jpegs_get_the_answers_the_processes_give(client_for):
    by_processes = client_for(jpeg_decode="processes")
    on_device = client_for(jpeg_decode="batch")
    assert by_processes.get("/v1/model").json()["jpeg_decoding"] == "processes"
    for name, data in hostile_jpegs().items():
        want = by_processes.post("/v1/predict", files={"file": ("x.jpg", data)})
        got = on_device.post("/v1/predict", files={"file": ("x.jpg", data)})
        assert got.status_code == want.status_code, (name, got.text, want.text)
        if want.status_code == 200:
            np.testing.assert_allclose(
                probabilities(got), probabilities(want), atol=1e-4, err_msg=name
            )
        else:
            assert got.json()["error"]["code"] == want.json()["error"]["code"], name
