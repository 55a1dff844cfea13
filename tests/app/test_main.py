"""``python -m app`` / ``invasive-api``: refuses to start cleanly, and serves over real HTTP."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.app.images import jpeg_bytes

REPO = Path(__file__).resolve().parents[2]


def service_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVASIVE_")}
    # A free port unless the test names one: a service a developer runs on :8000 must not
    # turn these start-up errors into "address already in use".
    values = {"port": str(free_port()), **values}
    env.update({f"INVASIVE_{k.upper()}": v for k, v in values.items()})
    return env


def run_module(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_missing_checkpoint_exits_nonzero_with_one_clear_line(tmp_path):
    missing = tmp_path / "nowhere" / "model.safetensors"
    result = run_module(service_env(checkpoint=str(missing)))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "checkpoint not found" in lines[0] and str(missing) in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_corrupt_checkpoint_exits_nonzero_with_one_clear_line(tmp_path, service_checkpoint):
    corrupt = tmp_path / "model.safetensors"
    corrupt.write_bytes(service_checkpoint.read_bytes()[:5000])  # truncated mid-weights
    result = run_module(service_env(checkpoint=str(corrupt)))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(corrupt) in lines[0]


def test_weights_that_do_not_fit_the_architecture_exit_with_one_clear_line(tmp_path):
    from model.architectures import build_model
    from model.checkpoint import CheckpointMetadata, save_checkpoint

    # resnet34 weights under a header that says resnet18: the header alone looks fine.
    wrong = tmp_path / "model.safetensors"
    meta = CheckpointMetadata(arch="resnet18", class_names=["no", "yes"], positive_class="yes")
    save_checkpoint(wrong, build_model("resnet34", 2), meta)
    result = run_module(service_env(checkpoint=str(wrong)))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "do not match architecture 'resnet18'" in lines[0]


def test_port_in_use_fails_before_loading_the_model(service_checkpoint):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = run_module(service_env(checkpoint=str(service_checkpoint), port=str(port)))
        elapsed = time.monotonic() - started
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0], result.stderr
    assert "Application startup" not in result.stdout + result.stderr, "no model load, no serving"
    print(f"refused in {elapsed:.1f}s")


def test_invalid_setting_exits_nonzero_with_one_clear_line(service_checkpoint):
    result = run_module(service_env(checkpoint=str(service_checkpoint), max_batch_size="lots"))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "INVASIVE_MAX_BATCH_SIZE" in lines[0], result.stderr


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"queue_limit": "8"}, "INVASIVE_QUEUE_LIMIT (8) is below INVASIVE_MAX_BATCH_FILES (32)"),
        ({"decode_timeout_s": "40"}, "INVASIVE_DECODE_TIMEOUT_S (40) is not below"),
        ({"admission_wait_s": "30"}, "INVASIVE_ADMISSION_WAIT_S (30) is not below"),
    ],
)
def test_settings_that_cannot_work_together_exit_with_one_clear_line(
    service_checkpoint, settings, named
):
    """Each value alone is fine; together a documented behaviour could never happen (a batch
    larger than the queue: always 503; a decode timeout past the request's: never fires)."""
    result = run_module(service_env(checkpoint=str(service_checkpoint), **settings))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr


def test_an_unknown_device_names_the_choices(service_checkpoint):
    result = run_module(service_env(checkpoint=str(service_checkpoint), device="gpu"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "invasive-api: error: invalid settings: INVASIVE_DEVICE: must be auto, cpu, cuda or "
        "cuda:N (e.g. cuda:1), got 'gpu'"
    )


def test_a_folder_at_the_checkpoint_path_is_named_as_such(tmp_path):
    folder = tmp_path / "model.safetensors"
    folder.mkdir()
    result = run_module(service_env(checkpoint=str(folder)))
    assert result.returncode == 2
    assert "is a folder, not a .safetensors file" in result.stderr


def test_settings_accept_an_upper_case_log_level():
    from app.config import Settings

    assert Settings(log_level="INFO").log_level == "info"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_console_script_serves_real_http(service_checkpoint, tmp_path):
    script = shutil.which("invasive-api", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("invasive-api is not installed in this environment (run `make install`)")
    port = free_port()
    # The default engine (auto), as a user gets it; its conversion cache in tmp_path.
    env = service_env(
        checkpoint=str(service_checkpoint), port=str(port), torch_threads="1", max_batch_size="4",
        engine_cache_dir=str(tmp_path / "engines"),
    )
    process = subprocess.Popen(
        [script], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                ready = httpx.get(f"{base}/health/ready", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert ready is not None and ready.status_code == 200, "service never became ready"
        response = httpx.post(
            f"{base}/v1/predict",
            files={"file": ("field.jpg", jpeg_bytes(seed=9), "image/jpeg")},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert response.json()["model_id"] == ready.json()["model_id"]
    finally:
        process.terminate()
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    # uvicorn shuts down gracefully, then re-raises the signal it caught (SIGTERM).
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output


def test_help_lists_every_setting(capsys):
    from app.__main__ import main
    from app.config import Settings

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in Settings.model_fields:
        assert f"INVASIVE_{name.upper()}" in out
