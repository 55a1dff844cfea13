"""Dataset indexing: both layouts, the Kaggle CSV quirks, and every bad-data case's message."""

from __future__ import annotations

import re
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


def test_skip_bad_counts_agree_and_unreadable_files_join_the_first_report(kaggle_data,
                                                                          tmp_path, capsys):
    """Audit: a missing file, a duplicate, a bad label and a file that is no image: the first
    error listed three (the fourth came on the next attempt), and --skip-bad said "3 skipped",
    then "skipped (4)", and trained on one image fewer than its "images" line said."""
    write_labels(kaggle_data, "name,invasive\n" + "".join(f"{n},{n % 2}\n" for n in range(1, 17))
                 + "ghost,1\n2,1\nweird,2\n")
    (kaggle_data / "train" / "weird.jpg").write_bytes((kaggle_data / "train" / "1.jpg")
                                                      .read_bytes())
    (kaggle_data / "train" / "3.jpg").write_bytes(b"<html>not a photo</html>")
    with pytest.raises(DataError) as err:
        load_labelled_data(kaggle_data)
    for fragment in ("missing files (1): 'ghost'", "duplicate names (1): '2' (line 19)",
                     "bad labels (1): 'weird'='2' (line 20) (a label must be 0 or 1)",
                     "unreadable images (1): 3 (the file is not an image"):
        assert fragment in str(err.value)
    # And one photo whose header is fine but whose data is cut short: only the decode sees it.
    whole = (kaggle_data / "train" / "6.jpg").read_bytes()
    (kaggle_data / "train" / "6.jpg").write_bytes(whole[:len(whole) // 2])
    prepared = prepare_data(tiny_config(kaggle_data, tmp_path / "m.safetensors", skip_bad=True))
    printed = capsys.readouterr().out
    assert "  images      15: not_invasive 8, invasive 7; 4 skipped by --skip-bad" in printed
    assert "  left out " not in printed  # weird.jpg has a row (with a bad label)
    assert ("  decoding    1 more unreadable image skipped by --skip-bad; 14 images left: "
            "not_invasive 7, invasive 7") in printed
    assert "--skip-bad: skipped (5): " in printed
    assert len(prepared.data.samples) == prepared.images.shape[0] == 14


def test_class_folders_skip_hidden_files_and_refuse_empty_classes(folder_data, tmp_path):
    """Audit: macOS's "._x.jpg" files counted as photos, an empty (or eda output) folder became a
    class the model could never learn, and photos in sub-folders or the root were left out
    without a word."""
    (folder_data / "invasive" / "._2.jpg").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (folder_data / "weeds").mkdir()
    (folder_data / "native").mkdir()
    (folder_data / "native" / "2023").mkdir()
    (folder_data / "native" / "2023" / "n1.jpg").write_bytes(
        (folder_data / "not_invasive" / "1.jpg").read_bytes())
    (folder_data / "loose.jpg").write_bytes((folder_data / "not_invasive" / "1.jpg").read_bytes())
    with pytest.raises(DataError) as err:
        load_labelled_data(folder_data)
    assert ("class folders with no photos (2): native/ (its photos are in sub-folders, which are "
            "not read), weeds/") in str(err.value)
    data = load_labelled_data(folder_data, skip_bad=True)
    assert data.class_names == ["invasive", "not_invasive"] and len(data.samples) == 16
    assert data.skipped == ["native/: class folder with no photos",
                            "weeds/: class folder with no photos"]
    assert data.notes == [
        "photos in sub-folders of class folders, not read (fit reads CLASS/*.jpg) (1): "
        "native/2023/ (1)",
        f"photos in {folder_data} itself, in no class folder, not read (1): loose.jpg"]


def test_kaggle_layout_names_photos_without_a_label_row(kaggle_data):
    write_labels(kaggle_data, "name,invasive\n" + "".join(f"{n},{n % 2}\n" for n in range(1, 13)))
    (kaggle_data / "train" / "._1.jpg").write_bytes(b"AppleDouble")
    data = load_labelled_data(kaggle_data)
    assert len(data.samples) == 12
    assert data.notes == [f"photos in {kaggle_data / 'train'} with no row in train_labels.csv, "
                          "left out (4): 13.jpg, 14.jpg, 15.jpg, 16.jpg"]


@pytest.mark.parametrize(("text", "message"), [
    ("name,invasive\n", "has a header and no rows"),
    ("name;invasive\n1;0\n", "needs columns 'name' and 'invasive'; its header has "
                             "['name;invasive'] (its fields are not separated by commas"),
    ("Name,Invasive\n1,0\n", "its header has ['Name', 'Invasive'] (column names are "
                             "case-sensitive)"),
    ("id,label\n1,0\n", "needs columns 'name' and 'invasive'; its header has ['id', 'label']"),
], ids=["header-only", "semicolons", "capitals", "other-names"])
def test_labels_csv_header_problems_say_what_was_found(kaggle_data, text, message):
    """Audit: all of these got "must have the columns 'name,invasive'", a header-only file too
    (the check looked at the first data row, not the header)."""
    write_labels(kaggle_data, text)
    with pytest.raises(DataError, match=re.escape(message)):
        load_labelled_data(kaggle_data)


def test_an_interrupted_unpack_leaves_no_partial_folder(kaggle_data, tmp_path, monkeypatch):
    """Audit: Ctrl-C while train.7z was unpacking left train/ with a few photos, which the next
    run took as the whole set ("missing files (95)")."""
    import py7zr

    download = tmp_path / "download"
    download.mkdir()
    (download / "train_labels.csv").write_bytes((kaggle_data / "train_labels.csv").read_bytes())
    with py7zr.SevenZipFile(download / "train.7z", "w") as zf:
        zf.writeall(kaggle_data / "train", "train")
    real = py7zr.SevenZipFile.extractall

    def interrupted(self, path=None, **kwargs):
        (Path(path) / "train").mkdir()
        (Path(path) / "train" / "1.jpg").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(py7zr.SevenZipFile, "extractall", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_labelled_data(download)
    assert sorted(p.name for p in download.iterdir()) == ["train.7z", "train_labels.csv"]
    monkeypatch.setattr(py7zr.SevenZipFile, "extractall", real)
    assert len(load_labelled_data(download).samples) == 16
