"""benchmarks/coldstart.py's own logic: the import-time reading, without starting a service."""

from __future__ import annotations

from benchmarks import coldstart


def test_import_time_reads_the_module_and_its_heaviest_imports():
    result = coldstart.import_time("json")
    assert result["wall_s"] > 0
    assert 0 < result["module_cumulative_s"] < result["wall_s"]
    names = [row["module"] for row in result["heaviest_top_level"]]
    assert "json.decoder" in names  # imported by json itself, one level below it
    costs = [row["cumulative_s"] for row in result["heaviest_top_level"]]
    assert costs == sorted(costs, reverse=True)


def test_entry_points_are_the_installed_scripts():
    assert coldstart.ENTRY_MODULES == {
        "invasive-api": "app.__main__",
        "invasive-train": "training.cli",
    }
    assert coldstart._script("invasive-api")[-1].endswith(("invasive-api", "app.__main__"))
