"""Dataset indexing: both layouts, the Kaggle CSV quirks, and every bad-data case's message."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from training.data import load_groups, load_labelled_data
from training.errors import DataError
from training.fit import prepare_data

from .conftest import tiny_config


def write_labels(root: Path, text: str, encoding: str = "utf-8") -> None:
    (root / "train_labels.csv").write_bytes(text.encode(encoding))


def test_kaggle_layout_reads_labels_and_paths(kaggle_data):
    data = load_labelled_data(kaggle_data)
    assert data.layout == "kaggle"
    assert data.class_names == ["not_invasive", "invasive"] and data.positive_class == "invasive"
    assert len(data.samples) == 16 and sum(data.labels) == 8
    assert all(s.path.is_file() and s.path.suffix == ".jpg" for s in data.samples)


def test_kaggle_csv_quirks_bom_crlf_spaces_and_extensions(kaggle_data):
    write_labels(kaggle_data, "\ufeffname , invasive\r\n 1 , 0\r\n2.jpg,1\r\n 3.JPG ,0\r\n\r\n",
                 encoding="utf-8")
    (kaggle_data / "train" / "3.jpg").rename(kaggle_data / "train" / "3.JPG")
    data = load_labelled_data(kaggle_data)
    assert [(s.name, s.label) for s in data.samples] == [("1", 0), ("2", 1), ("3", 0)]


def test_class_folders_take_class_names_from_folders(folder_data):
    data = load_labelled_data(folder_data)
    assert data.layout == "folders"
    assert data.class_names == ["invasive", "not_invasive"]
    assert data.positive_class == "invasive"
    assert {data.class_names[s.label] for s in data.samples} == {"invasive", "not_invasive"}


def test_class_folders_without_an_invasive_class_are_multiclass(tmp_path, folder_data):
    (folder_data / "invasive").rename(folder_data / "hogweed")
    data = load_labelled_data(folder_data)  # no --positive-class, no folder called invasive
    assert data.positive_class is None and data.multiclass
    with pytest.raises(ValueError, match="multi-class"):
        data.positive_index  # noqa: B018
    binary = load_labelled_data(folder_data, positive_class="hogweed")
    assert binary.positive_class == "hogweed" and not binary.multiclass
    with pytest.raises(DataError, match="--positive-class 'weed' is not one of"):
        load_labelled_data(folder_data, positive_class="weed")


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ("1,0\n99,1\n98,0\n", ["missing files (2)", "'99' (line 3)", "'98' (line 4)"]),
        ("1,0\n2,1\n2.jpg,1\n", ["duplicate names (1)", "'2.jpg' (line 4)"]),
        ("1,0\n2,2\n3,yes\n4,\n", ["bad labels (3)", "'2'='2' (line 3)", "'3'='yes'"]),
    ],
    ids=["missing", "duplicate", "bad-label"],
)
def test_bad_rows_end_in_one_clear_error(kaggle_data, rows, expected):
    write_labels(kaggle_data, "name,invasive\n" + rows)
    with pytest.raises(DataError) as err:
        load_labelled_data(kaggle_data)
    message = str(err.value)
    assert "--skip-bad" in message
    for fragment in expected:
        assert fragment in message


def test_error_lists_only_the_first_offenders(kaggle_data):
    write_labels(kaggle_data, "name,invasive\n" + "".join(f"x{i},0\n" for i in range(12)))
    with pytest.raises(DataError, match=r"missing files \(12\).*and 7 more"):
        load_labelled_data(kaggle_data)


def test_skip_bad_drops_and_reports_rows(kaggle_data):
    write_labels(kaggle_data, "name,invasive\n1,0\n2,1\n99,1\n3,7\n4,1\n5,0\n")
    data = load_labelled_data(kaggle_data, skip_bad=True)
    assert [s.name for s in data.samples] == ["1", "2", "4", "5"]
    assert len(data.skipped) == 2
    assert any("99" in s and "missing" in s for s in data.skipped)


def test_unreadable_images_error_then_skip(kaggle_data, tmp_path):
    (kaggle_data / "train" / "3.jpg").write_bytes(b"not a jpeg at all")
    truncated = (kaggle_data / "train" / "6.jpg").read_bytes()[:60]
    (kaggle_data / "train" / "5.jpg").write_bytes(truncated)
    config = tiny_config(kaggle_data, tmp_path / "m.safetensors")
    with pytest.raises(DataError, match=r"unreadable images \(2\): 3 \(.*5 \("):
        prepare_data(config)
    config.skip_bad = True
    prepared = prepare_data(config)
    assert len(prepared.data.samples) == 14 and prepared.images.shape[0] == 14
    assert {s.split(":")[0] for s in prepared.data.skipped} == {"3", "5"}


def test_missing_image_folder_and_unknown_layout(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_labelled_data(tmp_path / "nope")
    (tmp_path / "only").mkdir()
    with pytest.raises(DataError, match="neither Kaggle layout"):
        load_labelled_data(tmp_path / "only")
    (tmp_path / "k").mkdir()
    write_labels(tmp_path / "k", "name,invasive\n1,0\n")
    with pytest.raises(DataError, match="image folder"):
        load_labelled_data(tmp_path / "k")


def test_groups_from_a_group_file(kaggle_data):
    data = load_labelled_data(kaggle_data)
    rows = "".join(f"{s.name}.jpg,photo{int(s.name) // 4}\n" for s in data.samples)
    (kaggle_data / "meta.csv").write_text("name,source_image\n" + rows)
    groups = load_groups(data, "source_image", kaggle_data / "meta.csv")
    assert groups[:5] == ["photo0", "photo0", "photo0", "photo1", "photo1"]
    (kaggle_data / "meta.csv").write_text("name,source_image\n1,a\n")
    with pytest.raises(DataError, match=r"no 'source_image' for images \(15\)"):
        load_groups(data, "source_image", kaggle_data / "meta.csv")
    with pytest.raises(DataError, match="needs columns"):
        load_groups(data, "site", kaggle_data / "meta.csv")


def test_kaggle_archives_are_extracted_on_first_use(kaggle_data, tmp_path):
    import py7zr

    download = tmp_path / "download"
    download.mkdir()
    with zipfile.ZipFile(download / "train_labels.csv.zip", "w") as zf:
        zf.write(kaggle_data / "train_labels.csv", "train_labels.csv")
    with py7zr.SevenZipFile(download / "train.7z", "w") as zf:
        zf.writeall(kaggle_data / "train", "train")
    data = load_labelled_data(download)
    assert len(data.samples) == 16
    assert (download / "train" / "1.jpg").is_file()


def test_class_folder_duplicates_error_then_skip_bad_keeps_the_first(folder_data, tmp_path,
                                                                     capsys):
    # "2" is an invasive photo; a copy of it also sits among the natives (as .png: any suffix).
    (folder_data / "not_invasive" / "2.png").write_bytes(
        (folder_data / "invasive" / "2.jpg").read_bytes())
    with pytest.raises(DataError) as err:
        load_labelled_data(folder_data)
    assert "duplicate names (1): invasive/2.jpg & not_invasive/2.png" in str(err.value)
    assert "--skip-bad" in str(err.value)
    data = load_labelled_data(folder_data, skip_bad=True)
    assert len(data.samples) == 16 and [s.name for s in data.samples].count("2") == 1
    kept = next(s for s in data.samples if s.name == "2")
    assert kept.path == folder_data / "invasive" / "2.jpg"  # the first, in sorted class order
    assert data.skipped == ["not_invasive/2.png: duplicate name (kept invasive/2.jpg)"]
    prepared = prepare_data(tiny_config(folder_data, tmp_path / "m.safetensors", skip_bad=True))
    assert len(prepared.data.samples) == prepared.images.shape[0] == 16
    assert "--skip-bad: skipped (1): not_invasive/2.png: duplicate name" in capsys.readouterr().out
