from pathlib import Path

from benchmarks.serving.gpu import default_out, gpu_config, process_counts

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
    cfg = gpu_config(Path("o"), cores=16, gpu_memory_gb=139.8)  # an H200
    assert cfg.server_order() == ["litserve", "ours", "ours-6proc", "ours-10proc"]
    for name in ("ours-6proc", "ours-10proc"):
        assert cfg.variants[name]["INVASIVE_PROCESSES"] == name.removeprefix("ours-")[:-4]


def test_process_variants_fit_the_gpu_memory_and_the_host_cores():
    assert process_counts(cores=16, gpu_memory_gb=79.2) == (6,)  # an H100: 6 x 12.6 GB
    assert process_counts(cores=16, gpu_memory_gb=139.8) == (6, 10)  # an H200
    assert process_counts(cores=8, gpu_memory_gb=139.8) == (6,)  # too few cores for more
    assert process_counts(cores=32, gpu_memory_gb=180.0) == (6, 13)


def test_dry_run_is_tiny():
    cfg = gpu_config(Path("o"), cores=2, dry_run=True)
    assert cfg.duration_s <= 2 and max(cfg.concurrency) <= 8 and cfg.photo_count <= 4
    assert list(cfg.variants) == ["ours-2proc"]  # a 2-core box runs one multi-process variant


def test_shell_wrapper_passes_its_arguments_on():
    text = GPU_SCRIPT.read_text()
    assert 'benchmarks.serving.gpu "${photos[@]}" "$@"' in text
    assert "set -euo pipefail" in text
