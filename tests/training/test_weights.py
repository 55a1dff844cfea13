"""--weights imagenet | none | PATH: offline message, head replacement, key checks, no pickle."""

from __future__ import annotations

import pickle
import urllib.error

import pytest
import torch
import torchvision.models._api as tv_api
from safetensors.torch import save_file

from model.architectures import build_model
from training.errors import TrainingError
from training.weights import build_initial_model


def test_imagenet_offline_names_the_alternatives(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    with pytest.raises(TrainingError) as err:
        build_initial_model("resnet18", 2, "imagenet")
    message = str(err.value)
    assert "--weights none" in message and "--weights PATH" in message
    assert "name resolution" in message


def test_imagenet_weights_get_a_fresh_head(monkeypatch):
    reference = build_model("resnet18", 1000).state_dict()
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", lambda *a, **k: reference)
    model = build_initial_model("resnet18", 2, "imagenet")
    assert model.fc.out_features == 2
    assert torch.equal(model.conv1.weight, reference["conv1.weight"])


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_state_dict_loads_everything_but_the_head(tmp_path, suffix):
    source = build_model("mobilenet_v2", 1000).state_dict()
    features_only = {k: v for k, v in source.items() if not k.startswith("classifier.")}
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(features_only, str(path))
    else:
        torch.save(features_only, path)
    model = build_initial_model("mobilenet_v2", 2, str(path))
    assert model.classifier[1].out_features == 2
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in features_only.items())


def test_local_state_dict_must_match_the_architecture(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(build_model("resnet34", 2).state_dict(), path)
    with pytest.raises(TrainingError) as err:
        build_initial_model("resnet18", 2, str(path))
    assert "unexpected keys" in str(err.value) and "layer1.2." in str(err.value)
    partial = {k: v for k, v in build_model("resnet18", 2).state_dict().items()
               if not k.startswith("layer4.")}
    torch.save(partial, path)
    with pytest.raises(TrainingError, match=r"missing keys \(\d+\): layer4\."):
        build_initial_model("resnet18", 2, str(path))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_is_refused_and_missing_file_is_clear(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"w": Payload()}))
    with pytest.raises(TrainingError, match="not a safetensors file or a torch.save state dict"):
        build_initial_model("resnet18", 2, str(path))
    with pytest.raises(TrainingError, match="no such file"):
        build_initial_model("resnet18", 2, str(tmp_path / "absent.pth"))


def test_a_file_that_is_no_state_dict_gets_one_line(tmp_path):
    """Audit: a text file given to --weights printed torch's dozen lines of weights_only advice
    (load with weights_only=False, file a PyTorch issue), which the CLI cannot take."""
    text = tmp_path / "LICENSE.txt"
    text.write_text("Copyright (c) Soumith Chintala 2016,\nAll rights reserved.\n")
    with pytest.raises(TrainingError) as err:
        build_initial_model("resnet18", 2, str(text))
    message = str(err.value)
    assert message == (f"--weights {text}: not a safetensors file or a torch.save state dict "
                       "(torch.save files are read with weights_only=True, so one holding "
                       "anything but tensors and plain containers is refused too)")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\xff" * 64)
    with pytest.raises(TrainingError) as err:
        build_initial_model("resnet18", 2, str(broken))
    assert str(err.value).startswith(f"--weights {broken}: not a safetensors file or a "
                                     "torch.save state dict (")
    assert "\n" not in str(err.value)
