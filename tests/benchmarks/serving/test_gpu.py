from pathlib import Path

from benchmarks.serving.gpu import default_out, gpu_config

GPU_SCRIPT = Path(__file__).parents[3] / "benchmarks" / "serving" / "gpu.sh"


def test_results_go_to_the_device_out_folder_when_set():
    assert default_out({"OUT": "/out"}) == Path("/out/serving-gpu")
    assert default_out({}) == Path("benchmarks/results/serving-gpu")


def test_gpu_run_is_sized_for_a_gpu_host_and_fits_its_time_box():
    cfg = gpu_config(Path("o"), cores=16)
    assert cfg.arch == "resnet50"
    assert cfg.batch_settings()[0] == 64
    assert max(cfg.concurrency) >= 2 * cfg.batch_settings()[0]  # batches can fill
    assert cfg.service_env["INVASIVE_DECODE_PROCESSES"] == "16"
    assert cfg.ceiling_decode_threads == 16
    assert int(cfg.service_env["INVASIVE_QUEUE_LIMIT"]) >= max(cfg.concurrency)
    # cells + ceiling, without start-up and settling: leave most of the 8 minutes for those
    cells = len(cfg.servers) * len(cfg.payload_kinds) * len(cfg.concurrency)
    measured = cells * (cfg.duration_s + cfg.warmup_s)
    measured += len(cfg.payload_kinds) * len(cfg.ceiling_batch_sizes) * cfg.ceiling_seconds
    assert measured < 300


def test_litserve_runs_before_the_multi_process_variants():
    # a variant stuck starting (out of GPU memory on the H100) cost LitServe's row once
    cfg = gpu_config(Path("o"), cores=16)
    assert cfg.server_order() == ["litserve", "ours", "ours-6proc", "ours-8proc"]
    for name in ("ours-6proc", "ours-8proc"):
        assert cfg.variants[name]["INVASIVE_PROCESSES"] == name.removeprefix("ours-")[:-4]


def test_dry_run_is_tiny():
    cfg = gpu_config(Path("o"), cores=2, dry_run=True)
    assert cfg.duration_s <= 2 and max(cfg.concurrency) <= 8 and cfg.photo_count <= 4
    assert list(cfg.variants) == ["ours-2proc"]  # a 2-core box runs one multi-process variant


def test_shell_wrapper_passes_its_arguments_on():
    text = GPU_SCRIPT.read_text()
    assert 'benchmarks.serving.gpu "${photos[@]}" "$@"' in text
    assert "set -euo pipefail" in text
