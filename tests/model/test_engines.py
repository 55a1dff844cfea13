"""Inference engines (model.engines): parity with eager fp32, the disk cache, the fallback.

Parity is measured on generated photos through the real preprocessing, at batch 1 and 5, for
every engine whose library is installed. Tolerances (max absolute difference of any
probability from eager fp32): 1e-4 for engines computing in fp32, 2e-2 for bf16 ones.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import model.engines as engines
from model.checkpoint import load_checkpoint, save_checkpoint
from model.engines.base import BuiltEngine, warms_every_shape
from model.engines.cache import EngineCache, default_cache_dir, load_or_convert
from model.inference import Classifier, cpu_supports_bf16
from model.preprocessing import normalize_batch, prepare_input
from tests.app.images import jpeg_bytes

TOLERANCE = {"fp32": 1e-4, "bf16": 2e-2}
HAS = {name: importlib.util.find_spec(name) is not None for name in ("openvino", "onnxruntime")}
needs_openvino = pytest.mark.skipif(not HAS["openvino"], reason="openvino is not installed")


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def photos(demo_checkpoint) -> torch.Tensor:
    """Five generated photos of different sizes, preprocessed as the service does."""
    spec = Classifier.from_checkpoint(demo_checkpoint, "cpu", "fp32").spec
    sizes = [(640, 480), (50, 40), (128, 128), (300, 200), (96, 72)]
    return torch.stack(
        [prepare_input(jpeg_bytes(size, seed=40 + i), spec) for i, size in enumerate(sizes)]
    )


@pytest.fixture(scope="module")
def reference(demo_checkpoint, photos) -> np.ndarray:
    return Classifier.from_checkpoint(demo_checkpoint, "cpu", "fp32").predict_probabilities(photos)


def _engine_log(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "model.engines" and r.levelno >= logging.WARNING]


def test_eager_is_the_default_and_runs_as_before(demo_checkpoint, photos):
    """Default engine: eager, weights in the inference dtype and channels_last, exactly the
    computation the Classifier did before engines existed."""
    clf = Classifier.from_checkpoint(demo_checkpoint, "cpu", "fp32")
    assert clf.engine_info.name == "eager" and clf.engine_info.from_cache is None
    conv = next(m for m in clf.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = normalize_batch(photos, clf.spec, clf.dtype).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want = torch.softmax(clf.model(x).float(), dim=1).numpy()
    np.testing.assert_array_equal(clf.predict_probabilities(photos), want)


ENGINE_CASES = [
    pytest.param("onnxruntime", "fp32", marks=pytest.mark.skipif(not HAS["onnxruntime"],
                                                                 reason="no onnxruntime")),
    pytest.param("openvino", "fp32", marks=needs_openvino),
    pytest.param("openvino", "bf16", marks=needs_openvino),
    pytest.param("compile", "fp32"),
]


@pytest.mark.parametrize(("engine", "precision"), ENGINE_CASES)
def test_engine_matches_eager_fp32(demo_checkpoint, photos, reference, tmp_path, engine,
                                   precision, caplog):
    clf = Classifier.from_checkpoint(
        demo_checkpoint, "cpu", precision, engine=engine, cache_dir=tmp_path
    )
    assert _engine_log(caplog) == []
    info = clf.engine_info
    assert (info.name, info.requested, info.fallback_reason) == (engine, engine, None)
    expected_precision = "fp32" if precision == "fp32" or not cpu_supports_bf16() else precision
    if engine == "openvino":
        assert info.precision == expected_precision
    # the service warms every batch size only where a shape's first run specialises
    assert warms_every_shape(clf.engine) is (engine != "openvino")
    assert info.conversion_seconds is not None and info.conversion_seconds > 0
    tolerance = TOLERANCE[info.precision]
    single = np.concatenate([clf.predict_probabilities(photos[i : i + 1]) for i in range(5)])
    batched = clf.predict_probabilities(photos)
    assert batched.shape == reference.shape
    np.testing.assert_allclose(single, reference, atol=tolerance, rtol=0)
    np.testing.assert_allclose(batched, reference, atol=tolerance, rtol=0)


@needs_openvino
def test_conversion_is_cached_and_reused(demo_checkpoint, tmp_path, monkeypatch, photos):
    import openvino

    calls = []
    convert = openvino.convert_model

    def counted(*args, **kwargs):
        calls.append(1)
        return convert(*args, **kwargs)

    monkeypatch.setattr(openvino, "convert_model", counted)

    first = Classifier.from_checkpoint(demo_checkpoint, "cpu", "fp32", engine="openvino",
                                       cache_dir=tmp_path)
    assert len(calls) == 1 and first.engine_info.from_cache is False
    (entry,) = (tmp_path / first.model_id).iterdir()  # one entry, no temporary folder left
    assert entry.name.startswith("openvino-")
    assert {p.name for p in entry.iterdir()} == {"model.xml", "model.bin", "meta.json"}

    second = Classifier.from_checkpoint(demo_checkpoint, "cpu", "fp32", engine="openvino",
                                        cache_dir=tmp_path)
    assert len(calls) == 1, "the second start converted again instead of reading the cache"
    assert second.engine_info.from_cache is True
    np.testing.assert_allclose(second.predict_probabilities(photos),
                               first.predict_probabilities(photos), atol=1e-6)

    # Another checkpoint (here: the same weights, another threshold) is another file hash,
    # so another cache entry: never the first checkpoint's conversion.
    loaded = load_checkpoint(demo_checkpoint)
    meta = loaded.metadata.model_copy(update={"threshold": 0.25})
    other = save_checkpoint(tmp_path / "other.safetensors", loaded.model, meta)
    third = Classifier.from_checkpoint(other, "cpu", "fp32", engine="openvino",
                                       cache_dir=tmp_path)
    assert third.model_id != first.model_id
    assert len(calls) == 2 and third.engine_info.from_cache is False
    assert (tmp_path / third.model_id).is_dir()


def test_cache_key_follows_library_versions(tmp_path):
    cache = EngineCache(tmp_path / "resnet18-abc")
    a = cache.entry("openvino", {"openvino": "2026.4", "torch": "2.14.1"})
    assert a == cache.entry("openvino", {"torch": "2.14.1", "openvino": "2026.4"})
    assert a != cache.entry("openvino", {"openvino": "2026.5", "torch": "2.14.1"})
    assert a != cache.entry("openvino", {"openvino": "2026.4", "torch": "2.15.0"})
    assert a != cache.entry("onnxruntime", {"openvino": "2026.4", "torch": "2.14.1"})


def test_default_cache_dir_honours_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "invasive-species" / "engines"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "invasive-species" / "engines"


def test_a_failed_write_leaves_no_entry_and_is_not_an_error(tmp_path, caplog):
    cache = EngineCache.open(tmp_path, "resnet18-abc")

    def write(folder: Path) -> None:
        (folder / "model.onnx").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    assert cache.store("onnxruntime", {"v": "1"}, write) is None
    assert list((tmp_path / "resnet18-abc").iterdir()) == []  # temporary folder removed
    assert "No space left on device" in caplog.text


def test_an_unreadable_entry_is_converted_again(tmp_path, caplog):
    cache = EngineCache.open(tmp_path, "resnet18-abc")
    cache.store("fake", {}, lambda folder: (folder / "model").write_text("garbage"))

    def load(folder: Path) -> str:
        raise ValueError("not a model")

    artifact, from_cache = load_or_convert(
        cache, "fake", {}, lambda: "fresh", lambda a, f: (f / "model").write_text(a), load
    )
    assert (artifact, from_cache) == ("fresh", False)
    assert "converting again" in caplog.text


@needs_openvino
@pytest.mark.parametrize("how", ["cannot_create", "not_writable"])
def test_unusable_cache_dir_converts_in_memory(demo_checkpoint, tmp_path, monkeypatch, caplog,
                                               how):
    if how == "cannot_create":
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        cache_dir = blocker / "engines"  # mkdir fails: works as root too, unlike chmod
    else:
        cache_dir = tmp_path / "engines"

        def read_only(*args, **kwargs):
            raise OSError(30, "Read-only file system")

        monkeypatch.setattr("model.engines.cache.tempfile.mkdtemp", read_only)
    clf = Classifier.from_checkpoint(demo_checkpoint, "cpu", "fp32", engine="openvino",
                                     cache_dir=cache_dir)
    assert clf.engine_info.name == "openvino" and clf.engine_info.from_cache is False
    (record,) = _engine_log(caplog)
    assert "in memory" in record.getMessage()
    assert clf.predict_probabilities(torch.zeros((2, 3, 64, 64), dtype=torch.uint8)).shape == (2, 2)


def test_missing_library_falls_back_to_eager_with_one_line(demo_checkpoint, photos, reference,
                                                          monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    clf = Classifier.from_checkpoint(demo_checkpoint, "cpu", "fp32", engine="openvino")
    assert clf.engine_info.name == "eager" and clf.engine_info.requested == "openvino"
    assert "openvino" in clf.engine_info.fallback_reason
    assert "ModuleNotFoundError" in clf.engine_info.fallback_reason
    (record,) = _engine_log(caplog)
    assert "engine openvino failed, running eager PyTorch instead" in record.getMessage()
    assert "\n" not in record.getMessage()
    np.testing.assert_array_equal(clf.predict_probabilities(photos), reference)


@pytest.mark.parametrize("engine", ["openvino", "onnxruntime", "compile"])
def test_converter_exception_falls_back_to_eager(demo_checkpoint, monkeypatch, caplog, engine):
    def broken(source):
        raise RuntimeError(f"{engine} converter exploded\nwith a long traceback-like text")

    monkeypatch.setattr(engines, "_builder", lambda name: broken)
    clf = Classifier.from_checkpoint(demo_checkpoint, "cpu", "fp32", engine=engine)
    assert clf.engine_info.name == "eager"
    assert clf.engine_info.fallback_reason == f"{engine}: RuntimeError: {engine} converter exploded"
    (record,) = _engine_log(caplog)
    assert record.getMessage().endswith("RuntimeError: " + f"{engine} converter exploded")


def test_cudagraphs_on_cpu_falls_back_to_eager_saying_why(demo_checkpoint, photos, reference,
                                                          caplog):
    """CUDA graphs exist only on CUDA: asked for on a CPU, eager runs and the reason says so."""
    clf = Classifier.from_checkpoint(demo_checkpoint, "cpu", "fp32", engine="cudagraphs")
    assert (clf.engine_info.name, clf.engine_info.requested) == ("eager", "cudagraphs")
    assert clf.engine_info.fallback_reason == "cudagraphs: CUDA graphs need a CUDA device, not cpu"
    assert len(_engine_log(caplog)) == 1
    np.testing.assert_array_equal(clf.predict_probabilities(photos), reference)


def test_parity_failure_at_start_up_falls_back_to_eager(demo_checkpoint, monkeypatch, caplog):
    class Wrong:
        name, precision = "openvino", "fp32"

        def run(self, batch):  # right shape, wrong numbers (e.g. preprocessing lost)
            return torch.zeros((batch.shape[0], 2))

    built = BuiltEngine(Wrong(), from_cache=False)
    monkeypatch.setattr(engines, "_builder", lambda name: lambda source: built)
    clf = Classifier.from_checkpoint(demo_checkpoint, "cpu", "fp32", engine="openvino")
    assert clf.engine_info.name == "eager"
    assert "differ from eager fp32" in clf.engine_info.fallback_reason
    assert len(_engine_log(caplog)) == 1


def test_auto_picks_openvino_on_cpu_when_importable(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert engines.resolve_engine("auto", cuda) == "cudagraphs"
    assert engines.resolve_engine("compile", cpu) == "compile"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "openvino" else real(name, *a))
    assert engines.resolve_engine("auto", cpu) == "eager"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    assert engines.resolve_engine("auto", cpu) == "openvino"
    with pytest.raises(ValueError, match="engine must be one of"):
        engines.resolve_engine("tensorrt", cpu)


def test_settings_offer_exactly_the_engines():
    from typing import get_args

    from app.config import Settings

    assert set(get_args(Settings.model_fields["engine"].annotation)) == set(engines.ENGINES)
    assert Settings.model_fields["engine"].default == "auto"
