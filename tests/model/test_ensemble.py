"""Fold ensembles as one model: mean of the members' probabilities, one checkpoint file, every
engine, and the cost per image."""

from __future__ import annotations

import json

import pytest
import torch

from model.architectures import build_model
from model.checkpoint import (
    METADATA_KEY,
    CheckpointError,
    CheckpointMetadata,
    EnsembleSpec,
    load_checkpoint,
    save_checkpoint,
)
from model.engines import build_engine
from model.ensemble import FoldEnsemble, forward_gflops
from model.inference import Classifier


def members(k: int = 3, arch: str = "resnet18") -> list[torch.nn.Module]:
    nets = []
    for seed in range(k):
        torch.manual_seed(seed)
        nets.append(build_model(arch, num_classes=2).eval())
    return nets


def metadata(k: int, **kw) -> CheckpointMetadata:
    return CheckpointMetadata(arch="resnet18", class_names=["not_invasive", "invasive"],
                              positive_class="invasive", input_size=32,
                              ensemble=EnsembleSpec(members=k), **kw)


def test_output_is_the_mean_of_the_members_probabilities():
    nets = members(3)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        want = torch.stack([torch.softmax(m(x), dim=1) for m in nets]).mean(dim=0)
        got = torch.softmax(FoldEnsemble(nets)(x), dim=1)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_certain_and_uncertain_members_do_not_underflow():
    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = torch.tensor(logits)

        def forward(self, x):
            return self.logits.expand(len(x), -1)

    ensemble = FoldEnsemble([Fixed([0.0, 200.0]), Fixed([0.0, 0.0])])
    probs = torch.softmax(ensemble(torch.zeros(1, 3, 8, 8)), dim=1)
    torch.testing.assert_close(probs, torch.tensor([[0.25, 0.75]]))


def test_an_ensemble_needs_two_members():
    with pytest.raises(ValueError, match="at least 2"):
        FoldEnsemble(members(1))


def test_checkpoint_round_trip(tmp_path):
    nets = members(3)
    path = save_checkpoint(tmp_path / "ensemble.safetensors", FoldEnsemble(nets), metadata(3))
    loaded = load_checkpoint(path)
    assert isinstance(loaded.model, FoldEnsemble) and len(loaded.model.members) == 3
    assert loaded.model_id.startswith("resnet18x3-")
    assert loaded.metadata.ensemble.members == 3
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), FoldEnsemble(nets)(x))


def test_members_count_must_match_the_weights(tmp_path):
    path = save_checkpoint(tmp_path / "e.safetensors", FoldEnsemble(members(3)), metadata(3))
    # Rewrite the metadata to claim 4 members: the weights for a 4th are missing.
    from safetensors.torch import load_file, save_file

    claimed = metadata(4).model_dump_json()
    save_file(load_file(path), str(path), metadata={METADATA_KEY: claimed})
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(path)


@pytest.mark.parametrize("spec", [{"members": 1}, {"members": 3, "combine": "vote"}])
def test_invalid_ensemble_metadata_is_refused(tmp_path, spec):
    path = save_checkpoint(tmp_path / "e.safetensors", FoldEnsemble(members(3)), metadata(3))
    from safetensors.torch import load_file, save_file

    raw = json.loads(metadata(3).model_dump_json())
    raw["ensemble"].update(spec)
    save_file(load_file(path), str(path), metadata={METADATA_KEY: json.dumps(raw)})
    with pytest.raises(CheckpointError, match="invalid checkpoint metadata"):
        load_checkpoint(path)


def test_cost_counts_every_member():
    one = forward_gflops("resnet18", 2, 224)
    assert 3.5 < one < 3.7  # resnet18 at 224 px: 1.8 G multiply-adds
    assert forward_gflops("resnet18", 2, 224, members=5) == pytest.approx(5 * one)


@pytest.mark.parametrize("engine", ["openvino", "onnxruntime"])
def test_converted_engines_run_the_whole_ensemble(tmp_path, engine):
    """Averaging is part of the graph: a converted engine passes the parity check (no eager
    fallback) and gives the ensemble's probabilities."""
    pytest.importorskip(engine)
    ensemble = FoldEnsemble(members(2))
    spec = metadata(2).preprocess_spec
    built, info = build_engine(engine, ensemble, spec, torch.device("cpu"), "fp32",
                               model_id="resnet18x2-test", cache_dir=tmp_path)
    assert info.name == engine, info.fallback_reason
    classifier = Classifier(FoldEnsemble(members(2)), metadata(2), torch.device("cpu"), "fp32")
    batch = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    want = classifier.predict_probabilities(batch)
    got = torch.softmax(built.run(batch).float(), dim=1).numpy()
    assert abs(got - want).max() < 1e-4


def test_start_up_check_reads_shapes_not_weights(tmp_path):
    """``check_checkpoint`` (the service's preflight) accepts what loads and refuses, with the
    load's message, weights that do not fit: for ensembles too."""
    from model.checkpoint import check_checkpoint

    good = save_checkpoint(tmp_path / "good.safetensors", FoldEnsemble(members(2)), metadata(2))
    assert check_checkpoint(good).ensemble.members == 2
    short = save_checkpoint(tmp_path / "short.safetensors", FoldEnsemble(members(2)), metadata(3))
    with pytest.raises(CheckpointError, match=r"do not match architecture 'resnet18': missing"):
        check_checkpoint(short)
    other = save_checkpoint(tmp_path / "other.safetensors",
                            FoldEnsemble(members(2, "resnet34")), metadata(2))
    with pytest.raises(CheckpointError, match="do not match architecture 'resnet18'"):
        check_checkpoint(other)
    wide = FoldEnsemble([build_model("resnet18", num_classes=3) for _ in range(2)])
    with pytest.raises(CheckpointError, match=r"'members.0.fc.bias' is \(3,\), expected \(2,\)"):
        check_checkpoint(save_checkpoint(tmp_path / "wide.safetensors", wide, metadata(2)))
