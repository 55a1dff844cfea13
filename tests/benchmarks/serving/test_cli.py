from pathlib import Path

import pytest

from benchmarks.serving.__main__ import build_parser, config_from_args, main
from benchmarks.serving.config import RunConfig, service_batch_defaults


def _config(*argv):
    return config_from_args(build_parser().parse_args(["run", *argv]))


def test_full_run_defaults():
    cfg = _config()
    assert cfg.out == Path("benchmarks/results/serving")
    assert cfg.concurrency == (1, 8, 32)
    assert cfg.servers == ("ours", "litserve", "naive")
    assert cfg.payload_kinds == ("photo", "phone")
    assert cfg.duration_s >= 10


def test_quick_is_short_and_explicit_flags_win():
    cfg = _config("--quick", "--concurrency", "1,32", "--servers", "ours,naive")
    assert cfg.duration_s <= 5 and cfg.warmup_s <= 2
    assert cfg.concurrency == (1, 32)
    assert cfg.servers == ("ours", "naive")


def test_gpu_settings_are_reachable_from_the_command_line():
    # a GPU session's targeted run needed both (wrk on 1 thread, a CPU-decoding ceiling)
    assert _config().wrk_threads == 1 and not _config().ceiling_decode_on_device
    cfg = _config("--wrk-threads", "4", "--ceiling-decode-on-device")
    assert cfg.wrk_threads == 4 and cfg.ceiling_decode_on_device


def test_service_env_and_bad_names_are_checked(capsys):
    cfg = _config("--service-env", "INVASIVE_DECODE_THREADS=1")
    assert cfg.service_env == {"INVASIVE_DECODE_THREADS": "1"}
    assert _config("--service-env", "OMP_WAIT_POLICY=PASSIVE").service_env == {
        "OMP_WAIT_POLICY": "PASSIVE"
    }
    for bad in (["--service-env", "decode=1"], ["--service-env", "X"], ["--servers", "a,b"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["run", *bad])


def test_batch_settings_default_to_the_service_and_apply_to_both():
    assert RunConfig(out=Path(".")).batch_settings() == service_batch_defaults()
    assert RunConfig(out=Path("."), max_batch_size=8, batch_wait_ms=2).batch_settings() == (8, 2)


def test_missing_photos_is_a_clear_error_not_a_traceback(tmp_path, capsys, monkeypatch):
    from benchmarks.serving import loadgen

    monkeypatch.setattr(loadgen.shutil, "which", lambda name: "/usr/bin/wrk")
    code = main(["run", "--photos", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "cannot run: no benchmark photos" in capsys.readouterr().err


def test_missing_wrk_is_a_clear_error(tmp_path, capsys, monkeypatch):
    from benchmarks.serving import loadgen

    monkeypatch.setattr(loadgen.shutil, "which", lambda name: None)
    assert main(["run", "--out", str(tmp_path)]) == 2
    assert "wrk (the HTTP load generator) is not installed" in capsys.readouterr().err


def test_slow_servers_get_cells_long_enough_for_several_rounds():
    cfg = RunConfig(out=Path("."), duration_s=15.0, max_cell_s=45.0)
    assert cfg.cell_duration(1, None) == 15.0  # nothing known yet
    assert cfg.cell_duration(32, 0.02) == 15.0  # a fast server: the default
    assert cfg.cell_duration(8, 1.0) == 24.0  # 3 rounds of 8 one-second requests
    assert cfg.cell_duration(32, 1.0) == 45.0  # capped


def test_variants_run_our_service_again_with_extra_settings(tmp_path):
    from benchmarks.serving.runner import server_spec

    cfg = _config(
        "--service-env",
        "INVASIVE_QUEUE_LIMIT=512",
        "--variant",
        "ours-t1:INVASIVE_TORCH_THREADS=1,INVASIVE_DECODE_THREADS=1",
        "--servers",
        "naive,ours",
    )
    assert cfg.variants == {
        "ours-t1": {"INVASIVE_TORCH_THREADS": "1", "INVASIVE_DECODE_THREADS": "1"}
    }
    assert cfg.server_order() == ["naive", "ours", "ours-t1"]
    spec = server_spec("ours-t1", cfg, tmp_path / "c.safetensors")
    assert spec.name == "ours-t1" and spec.ready_path == "/health/ready"
    assert spec.env["INVASIVE_TORCH_THREADS"] == "1"
    assert spec.env["INVASIVE_QUEUE_LIMIT"] == "512"  # the run-wide settings still apply
    assert spec.env["INVASIVE_CHECKPOINT"] == str(tmp_path / "c.safetensors")
    assert "INVASIVE_TORCH_THREADS" not in server_spec("ours", cfg, tmp_path / "c").env
    assert spec.listeners == 1
    cfg.variants["ours-4proc"] = {"INVASIVE_PROCESSES": "4"}
    assert server_spec("ours-4proc", cfg, tmp_path / "c").listeners == 4  # ready: all 4 listen


@pytest.mark.parametrize("bad", ["ours:INVASIVE_A=1", "t1", "t1:", "t1:a=1"])
def test_bad_variants_are_refused(bad):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--variant", bad])
