"""Audit of the offline CLI (predict, evaluate, eda): what it reads, what it leaves out and says,
what it refuses to overwrite, and how it words the errors it cannot avoid."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from model.checkpoint import METADATA_KEY
from model.imaging import SUPPORTED_FORMATS
from training.cli import main
from training.data import IMAGE_SUFFIXES, load_labelled_data
from training.predict import list_images


def _never_scored(monkeypatch) -> None:
    import training.scoring

    def scored(*args, **kwargs):
        raise AssertionError("scored before the output was checked")

    monkeypatch.setattr(training.scoring, "score_files", scored)


def _predict(checkpoint: Path, images: Path, output: str, *extra: str) -> int:
    return main(["predict", "--checkpoint", str(checkpoint), "--images", str(images),
                 "--output", output, "--workers", "1", *extra])


def test_predict_never_overwrites_the_checkpoint_or_a_file_that_is_no_csv(
        demo_checkpoint, kaggle_data, tmp_path, monkeypatch, capsys):
    """Audit: --output ckpt/victim.safetensors turned the model into a CSV."""
    victim = tmp_path / "victim.safetensors"
    shutil.copy(demo_checkpoint, victim)
    before = victim.read_bytes()
    alias = tmp_path / "alias.csv"  # a .csv name that is the checkpoint all the same
    alias.symlink_to(victim)
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    images = kaggle_data / "train"
    _never_scored(monkeypatch)
    for output, said in ((victim, "is the checkpoint file"), (alias, "is the checkpoint file"),
                         (notes, "exists and is not a .csv file")):
        assert _predict(victim, images, str(output)) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --output {output} {said}") and err.count("\n") == 1
    assert victim.read_bytes() == before and notes.read_text() == "keep me"


def test_predict_replaces_an_old_csv_and_makes_a_folder_named_with_a_slash(
        demo_checkpoint, kaggle_data, tmp_path, capsys):
    images = kaggle_data / "train"
    old = tmp_path / "old.csv"
    old.write_text("a rerun's submission\n")
    assert _predict(demo_checkpoint, images, str(old)) == 0
    assert old.read_text().startswith("name,invasive\n")
    # Audit: out/newdir/ (missing) became a file called newdir.
    assert _predict(demo_checkpoint, images, str(tmp_path / "newdir") + "/") == 0
    assert (tmp_path / "newdir" / "submission.csv").is_file()
    assert f"to {tmp_path / 'newdir' / 'submission.csv'}" in capsys.readouterr().out


def test_image_suffixes_cover_every_format_the_service_reads():
    by_format = {"JPEG": ".jpg", "MPO": ".mpo", "PNG": ".png", "WEBP": ".webp", "HEIF": ".heif",
                 "HEIC": ".heic", "AVIF": ".avif", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif"}
    assert set(by_format) == SUPPORTED_FORMATS  # a new format needs its suffix here too
    assert {*by_format.values(), ".jpe", ".jfif", ".jpeg", ".tiff"} <= set(IMAGE_SUFFIXES)


def test_predict_scores_gif_and_jfif_and_says_what_it_left_out(demo_checkpoint, kaggle_data,
                                                               tmp_path, capsys):
    """Audit: 15 photos in, 11 predictions out, no word; a named pipe ``pipe.jpg`` hung it."""
    images = tmp_path / "photos"
    images.mkdir()
    src = kaggle_data / "train" / "1.jpg"
    Image.open(src).save(images / "anim.gif")
    shutil.copy(src, images / "cam.jfif")
    shutil.copy(src, images / "noext")
    (images / "readme.txt").write_text("not a photo")
    os.mkfifo(images / "pipe.jpg")
    (images / "zero.jpg").write_bytes(b"")
    assert _predict(demo_checkpoint, images, str(tmp_path / "s.csv")) == 2
    assert "zero.jpg (the file is empty)" in capsys.readouterr().err  # not "not an image"
    assert _predict(demo_checkpoint, images, str(tmp_path / "s.csv"), "--skip-bad") == 0
    names = [r["name"] for r in csv.DictReader((tmp_path / "s.csv").open())]
    assert names == ["anim", "cam"]
    out = capsys.readouterr().out
    assert "files whose names are not image names" in out
    assert "left out (2): noext, readme.txt" in out
    assert "not regular files (named pipes, devices, broken links), left out (1): pipe.jpg" in out


def test_predict_follows_folder_links_once_and_reports_folders_it_cannot_list(
        kaggle_data, tmp_path, monkeypatch):
    images = tmp_path / "photos"
    (images / "loop").mkdir(parents=True)
    shutil.copy(kaggle_data / "train" / "1.jpg", images / "top.jpg")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for n in (2, 3):
        shutil.copy(kaggle_data / "train" / f"{n}.jpg", elsewhere / f"{n}.jpg")
    (images / "linked").symlink_to(elsewhere)  # audit: 6 photos there were silently not read
    (images / "loop" / "up").symlink_to(images)  # a loop: must end, and score nothing twice
    (images / "locked").mkdir()
    real_scandir = os.scandir

    def scandir(path):
        if Path(path) == images / "locked":  # chmod 000 does not stop root, who runs CI
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    listing = list_images(images)
    assert [p.relative_to(images).as_posix() for p in listing.paths] == [
        "linked/2.jpg", "linked/3.jpg", "top.jpg"]
    assert listing.left_out == [
        "folders that cannot be listed, left out (1): locked/ (Permission denied)",
        "links to folders already read, not followed again (1): loop/up/"]


def test_names_differing_only_in_extension_name_the_files(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(Exception, match=r"extension \(1\): a \(a\.jpg, a\.png\)$"):
        list_images(tmp_path)


def test_kaggle_layout_finds_gif_jfif_and_a_row_naming_an_extensionless_file(kaggle_data):
    """Audit: rows for train/anim.gif and cam.jfif were 'missing files' (evaluate and eda)."""
    train = kaggle_data / "train"
    Image.open(train / "1.jpg").save(train / "anim.gif")
    shutil.copy(train / "2.jpg", train / "cam.jfif")
    shutil.copy(train / "3.jpg", train / "cam2")
    with (kaggle_data / "train_labels.csv").open("a") as f:
        f.write("anim.gif,1\ncam,0\ncam2,1\n")
    data = load_labelled_data(kaggle_data)
    names = {s.name: s.path.name for s in data.samples}
    assert (names["anim"], names["cam"], names["cam2"]) == ("anim.gif", "cam.jfif", "cam2")
    assert len(data.samples) == 19


def test_a_zero_byte_photo_is_reported_as_empty_in_labelled_data(kaggle_data):
    (kaggle_data / "train" / "4.jpg").write_bytes(b"")
    data = load_labelled_data(kaggle_data, skip_bad=True)
    assert data.skipped == ["4: the file is empty"]  # not "not an image in a supported format"


def test_evaluate_says_which_photos_it_left_out(demo_checkpoint, kaggle_data, tmp_path, capsys):
    """Audit: 30 photos, 25 rows: "scored 25 images" and nothing else."""
    shutil.copy(kaggle_data / "train" / "1.jpg", kaggle_data / "train" / "extra.jpg")
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(demo_checkpoint), "--data", str(kaggle_data),
                 "--output", str(out), "--workers", "1"]) == 0
    note = (f"photos in {kaggle_data / 'train'} with no row in train_labels.csv, left out (1): "
            "extra.jpg")
    assert f"  left out         {note}" in capsys.readouterr().out
    report = json.loads((out / "metrics.json").read_text())
    assert report["left_out"] == [note] and report["count"] == 16
    # Audit: "not the data the checkpoint was trained on" claimed more than a fingerprint shows.
    assert "a different set from the data the checkpoint was trained on" in report["scope"]
    assert "it may still share photos with it" in report["scope"]


def test_eda_prints_what_skip_bad_skipped(folder_data, tmp_path, capsys):
    (folder_data / "invasive" / "2.jpg").write_bytes(b"garbage")
    assert main(["eda", "--data", str(folder_data), "--output", str(tmp_path / "eda"),
                 "--skip-bad"]) == 0
    assert "  skipped       --skip-bad (1): 2: " in capsys.readouterr().out


def _with_metadata(src: Path, dst: Path, **change) -> Path:
    raw = src.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    meta = json.loads(header["__metadata__"][METADATA_KEY])
    meta.update(change)
    header["__metadata__"][METADATA_KEY] = json.dumps(meta)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    dst.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n:])
    return dst


def test_checkpoint_mismatch_names_the_tensors_that_do_not_fit(demo_checkpoint, kaggle_data,
                                                               tmp_path, capsys):
    """Audit: the message ended "Error(s) in loading state_dict for ResNet:", nothing after."""
    images = kaggle_data / "train"
    three = _with_metadata(demo_checkpoint, tmp_path / "three.safetensors",
                           class_names=["a", "b", "invasive"])
    assert _predict(three, images, str(tmp_path / "s.csv")) == 2
    err = capsys.readouterr().err
    assert "'fc.bias' is (2,), expected (3,)" in err
    # only the head differs: said as such, not as a wrong architecture (audit)
    assert "classifier has 2 outputs but the metadata names 3 classes ['a', 'b', 'invasive']" in err
    assert "architecture" not in err
    deeper = _with_metadata(demo_checkpoint, tmp_path / "r34.safetensors", arch="resnet34")
    assert main(["evaluate", "--checkpoint", str(deeper), "--data", str(kaggle_data),
                 "--output", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err
    assert "architecture 'resnet34': missing 'layer" in err and err.count("\n") == 1


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_output_that_cannot_be_written_is_one_line(command, demo_checkpoint, kaggle_data,
                                                   tmp_path, monkeypatch, capsys):
    """Audit: a 300-character name, and /proc/sub.csv, ended in tracebacks."""
    long = tmp_path / ("x" * 300 + ".csv")
    data = (["--images", str(kaggle_data / "train")] if command == "predict"
            else ["--data", str(kaggle_data)])
    base = [command, "--checkpoint", str(demo_checkpoint), *data, "--workers", "1"]
    assert main([*base, "--output", str(long)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --output {long}: the name xxx") and "too long" in err


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_write_that_fails_after_the_checks_is_one_line(command, demo_checkpoint, kaggle_data,
                                                         tmp_path, monkeypatch, capsys):
    """A full disk, or /proc/sub.csv as root (which may create files anywhere): no traceback."""
    import training.evaluate

    data = (["--images", str(kaggle_data / "train")] if command == "predict"
            else ["--data", str(kaggle_data)])
    base = [command, "--checkpoint", str(demo_checkpoint), *data, "--workers", "1"]

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("training.predict.write_atomically", full)
    monkeypatch.setattr(training.evaluate, "plot_confusion", full)
    target = tmp_path / ("s.csv" if command == "predict" else "eval")
    assert main([*base, "--output", str(target)]) == 2
    last = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    assert last == f"error: cannot write {target}: No space left on device"


def test_evaluate_into_an_earlier_report_s_folder_leaves_none_of_its_files(
    demo_checkpoint, kaggle_data, tmp_path
):
    """A stale training_curves.png from another checkpoint sat beside the new figures."""
    checkpoint = tmp_path / "no-log.safetensors"  # no training log beside it: no curves drawn
    shutil.copy(demo_checkpoint, checkpoint)
    out = tmp_path / "eval"
    out.mkdir()
    (out / "training_curves.png").write_bytes(b"another checkpoint's curves")
    (out / "notes.txt").write_text("the user's own file")
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(kaggle_data),
                 "--output", str(out), "--workers", "1"]) == 0
    assert not (out / "training_curves.png").exists()
    assert (out / "notes.txt").read_text() == "the user's own file"
    assert (out / "metrics.json").is_file()


@pytest.mark.parametrize("layout", ["kaggle", "folders"])
def test_evaluate_measures_a_set_of_one_class_and_says_roc_auc_is_undefined(
    demo_checkpoint, kaggle_data, folder_data, tmp_path, capsys, layout
):
    """A folder of confirmed sightings: recall and accuracy are defined, ROC AUC is not (it
    was refused with "training needs at least two classes")."""
    if layout == "kaggle":
        data = kaggle_data
        rows = list(csv.DictReader((data / "train_labels.csv").open()))
        with (data / "train_labels.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["name", "invasive"], lineterminator="\n")
            writer.writeheader()
            writer.writerows(r for r in rows if r["invasive"] == "1")
        for r in rows:
            if r["invasive"] == "0":
                for photo in (data / "train").glob(f"{r['name']}.*"):
                    photo.unlink()
    else:
        data = folder_data
        shutil.rmtree(data / "not_invasive")
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(demo_checkpoint), "--data", str(data),
                 "--output", str(out), "--workers", "1"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["roc_auc"] is None and report["count"] == 8
    assert report["confusion"]["tp"] + report["confusion"]["fn"] == 8
    assert report["confusion"]["tn"] + report["confusion"]["fp"] == 0
    assert "ROC AUC undefined (one class only)" in capsys.readouterr().out
    assert not (out / "roc.png").exists()


def test_class_folders_name_the_files_they_do_not_read(folder_data):
    """Audit: a camera's extensionless export (IMG_0001) in a class folder was passed over in
    silence, unlike predict's folders, which list what they leave out."""
    photo = next((folder_data / "invasive").iterdir()).read_bytes()
    (folder_data / "invasive" / "IMG_0001").write_bytes(photo)
    (folder_data / "invasive" / "notes.txt").write_text("plot 17, north edge")
    (folder_data / "invasive" / ".DS_Store").write_bytes(b"\x00")  # hidden: not worth a word
    data = load_labelled_data(folder_data)
    assert data.notes == ["files in class folders without a photo's name (.jpg, .png, ...; see "
                          "the README), not read (2): invasive/IMG_0001, invasive/notes.txt"]
    assert all(s.path.suffix for s in data.samples)


def test_eda_looks_at_a_folder_of_one_class(folder_data, tmp_path, capsys):
    """Audit: eda refused a folder of confirmed sightings that evaluate measures."""
    shutil.rmtree(folder_data / "not_invasive")
    assert main(["eda", "--data", str(folder_data), "--output", str(tmp_path / "eda")]) == 0
    out = capsys.readouterr().out
    assert "positive class invasive (100.0 %)" in out
    assert "one class only: evaluate measures a checkpoint's recall on it" in out
    assert json.loads((tmp_path / "eda" / "eda.json").read_text())["classes"] == {"invasive": 8}


def test_eda_names_images_over_the_pixel_limit(folder_data, tmp_path, capsys):
    """Audit: a 20000x20000 PNG was reported as an ordinary size; fit then stopped at it."""
    big = folder_data / "invasive" / "huge.png"
    Image.new("L", (20000, 20000)).save(big, optimize=False, compress_level=9)
    assert main(["eda", "--data", str(folder_data), "--output", str(tmp_path / "eda")]) == 0
    out = capsys.readouterr().out
    assert "too large     over 50,000,000 pixels, refused by fit, predict and the service" in out
    assert "huge (20000x20000)" in out
    summary = json.loads((tmp_path / "eda" / "eda.json").read_text())
    assert summary["over_pixel_limit"] == ["huge (20000x20000)"]


def test_offline_commands_follow_the_service_s_pixel_limit(demo_checkpoint, kaggle_data,
                                                            folder_data, tmp_path, monkeypatch,
                                                            capsys):
    """Audit: INVASIVE_MAX_IMAGE_PIXELS set for the service was not read offline, so predict
    refused what the service scored (a raised limit) or scored what it refused (a lowered one)."""
    images = tmp_path / "photos"
    images.mkdir()
    shutil.copy(kaggle_data / "train" / "1.jpg", images / "a.jpg")
    width, height = Image.open(images / "a.jpg").size
    monkeypatch.setenv("INVASIVE_MAX_IMAGE_PIXELS", str(width * height - 1))
    assert _predict(demo_checkpoint, images, str(tmp_path / "s.csv")) == 2
    assert f"over the limit of {width * height - 1}" in capsys.readouterr().err
    monkeypatch.setenv("INVASIVE_MAX_IMAGE_PIXELS", str(width * height))
    assert _predict(demo_checkpoint, images, str(tmp_path / "s.csv")) == 0
    assert [r["name"] for r in csv.DictReader((tmp_path / "s.csv").open())] == ["a"]

    monkeypatch.setenv("INVASIVE_MAX_IMAGE_PIXELS", "100")
    assert main(["eda", "--data", str(folder_data), "--output", str(tmp_path / "eda")]) == 0
    assert "over 100 pixels, refused by fit, predict and the service" in capsys.readouterr().out

    monkeypatch.setenv("INVASIVE_MAX_IMAGE_PIXELS", "50M")
    assert _predict(demo_checkpoint, images, str(tmp_path / "s.csv")) == 2
    assert ("INVASIVE_MAX_IMAGE_PIXELS='50M': expected a whole number of pixels"
            in capsys.readouterr().err)


def test_the_decode_cache_keeps_photos_decoded_under_another_pixel_limit_apart(
        tmp_path, monkeypatch):
    from model.preprocessing import PreprocessSpec
    from training.images import _cache_key

    photo = tmp_path / "a.jpg"
    Image.new("RGB", (40, 30)).save(photo)
    spec = PreprocessSpec(input_size=32)
    default = _cache_key([photo], spec)
    monkeypatch.setenv("INVASIVE_MAX_IMAGE_PIXELS", "50000000")
    assert _cache_key([photo], spec) == default  # the default, spelled out: the same decodes
    monkeypatch.setenv("INVASIVE_MAX_IMAGE_PIXELS", "1000")
    assert _cache_key([photo], spec) != default  # a failure cached under one limit is not reused
