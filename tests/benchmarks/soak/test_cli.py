"""Command line -> configuration: short trial runs and the defaults of the full run."""

from pathlib import Path

import pytest

from benchmarks.soak.__main__ import build_parser, config_from_args


def test_defaults_are_the_full_run():
    cfg = config_from_args(build_parser().parse_args(["run"]))
    assert cfg.out == Path("benchmarks/results/soak")
    assert cfg.duration_s == 600 and cfg.capacity_seconds == 30 and cfg.starvation_seconds == 20
    assert cfg.capacity_concurrency == 16 and cfg.max_inflight == 512
    assert cfg.rate is None and cfg.rate_factor == 2.0
    assert cfg.request_timeout_s == 60 and cfg.client == "http1"
    assert cfg.mix["photo"] == 0.75


def test_short_trial_flags_and_service_env():
    cfg = config_from_args(
        build_parser().parse_args(
            [
                "run",
                "--out",
                "/tmp/x",
                "--duration",
                "20",
                "--capacity-seconds",
                "8",
                "--starvation-seconds",
                "6",
                "--env",
                "INVASIVE_QUEUE_LIMIT=64",
                "--env",
                "OMP_WAIT_POLICY=PASSIVE",
                "--mix",
                "photo=1,hostile=1",
                "--starvation-expensive",
                "a.png,b.jpg",
            ]
        )
    )
    assert (cfg.duration_s, cfg.capacity_seconds, cfg.starvation_seconds) == (20, 8, 6)
    assert cfg.env == {"INVASIVE_QUEUE_LIMIT": "64", "OMP_WAIT_POLICY": "PASSIVE"}
    assert cfg.mix["photo"] == cfg.mix["hostile"] == 0.5
    assert cfg.starvation_expensive == ("a.png", "b.jpg")


@pytest.mark.parametrize(
    "argv", [["run", "--env", "lower=1"], ["run", "--mix", "cat=1"], ["run", "--client", "curl"]]
)
def test_bad_arguments_stop_at_parse_time(argv, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)
