"""The flags several ``invasive-train`` commands share, the help layout and ``--version``.

Imports nothing heavy: building the parser must stay cheap (see ``training.cli``).
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
from collections.abc import Callable
from pathlib import Path

from model.devices import DEVICE_CHOICES, known_device
from training.config import FitConfig

DEFAULTS = FitConfig(data=Path("."), output=Path("."))
DISTRIBUTION = "invasive-species-service"  # the name pyproject.toml installs this project as
# = model.checkpoint.CheckpointMetadata.input_size's bounds (that module imports torch); a test
# keeps the two equal. Checked here, a bad --image-size fails at once, not when the first
# checkpoint is written after an epoch of training.
INPUT_SIZE_RANGE = (16, 2048)
SEED_MAX = 2**32 - 1  # scikit-learn's random_state (the splits) takes no more


class Parser(argparse.ArgumentParser):
    """A mistake in the options is one line (the whole usage of ``fit`` would be 30 lines above
    it), naming the flag and where the options are listed; exit status 2, as argparse's."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} ('{self.prog} --help' lists the "
                     "options)\n")


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[low, high]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    return parse


def number(low: float, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite float in the interval given (``*_open``: bound excluded)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        too_high = high is not None and (value >= high if high_open else value > high)
        if not math.isfinite(value) or too_low or too_high:
            if high is None:
                bounds = f"{'above' if low_open else 'at least'} {low:g}"
            else:
                bounds = (f"in {'(' if low_open else '['}{low:g}, {high:g}"
                          f"{')' if high_open else ']'}")
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    return parse


def device_name(text: str) -> str:
    """An argparse ``type`` for ``--device``: what ``model.inference.resolve_device`` and
    ``training.distributed`` handle. Checked here so that a typo such as ``gpu`` gets the
    choices, not torch's list of its internal device types seconds later."""
    name = known_device(text)
    if name is not None:
        return name
    raise argparse.ArgumentTypeError(f"{text!r} is not a device here; use {DEVICE_CHOICES}")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` once, only where it says something: not for required flags,
    switches (False) or unset options (None), nor where the help text already names its
    default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        unset = action.default is None or action.default is False  # 0 is a default to show
        if (action.required or unset or action.default == argparse.SUPPRESS
                or "default" in text or not action.option_strings):
            return text
        return text + " (default: %(default)s)"


def version_text() -> str:
    """This package's version and torch/torchvision's, read from the installed packages'
    metadata (cheap: importing torch to ask it would take seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return (f"invasive-train {installed(DISTRIBUTION)} (torch {installed('torch')}, "
            f"torchvision {installed('torchvision')}, Python {platform.python_version()})")


class VersionAction(argparse.Action):
    """``--version``: the text is looked up only when asked for."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="print the versions of this package, torch and torchvision, and exit"):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text(), file=sys.stdout)
        parser.exit()


def add_data_flags(p: argparse.ArgumentParser, positive_help: str | None = None) -> None:
    p.add_argument("--data", type=Path, required=True, metavar="DIR",
                   help="Kaggle layout (train/ + train_labels.csv; archives are extracted) "
                        "or one folder per class")
    p.add_argument("--skip-bad", action="store_true",
                   help="drop missing, duplicate (keeping the first), mislabelled and unreadable "
                        "images, listing them")
    p.add_argument("--positive-class", default=None, metavar="NAME",
                   help=positive_help or "the invasive class of a class-folders dataset (unset: "
                                         "the folder named 'invasive', '1' or 'positive'; with "
                                         "none of them the data is multi-class)")


def add_group_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--group-column", default=None, metavar="COLUMN",
                   help="images sharing this column's value (e.g. source_image: tiles of one "
                        "photo) form a group, kept on one side of every split")
    p.add_argument("--group-file", type=Path, default=None, metavar="CSV",
                   help="CSV with 'name' and the group column (default: the labels CSV)")


def add_runtime_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", type=device_name,
                   help="auto (CUDA if present, else CPU), cpu, cuda, cuda:1")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto: bf16 (or fp16) mixed precision on CUDA, bf16 on CPUs that "
                        "support it, else fp32")
    p.add_argument("--workers", type=integer(0), default=DEFAULTS.workers,
                   help="threads that decode photos (fit --cache none: DataLoader processes)")


def add_json_flag(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--json", action="store_true",
                   help=f"print {what} as JSON on stdout (the readable summary and progress go "
                        "to stderr)")


def add_recipe_flags(p: argparse.ArgumentParser) -> None:
    """``fit``'s regularisation and fine-tuning knobs (docs/benchmarks.md measures each)."""
    p.add_argument("--ema-decay", type=number(0, 1, high_open=True), default=DEFAULTS.ema_decay,
                   metavar="D",
                   help="validate and save an exponential moving average of the weights, "
                        "updated every step with this decay (e.g. 0.98; BatchNorm statistics "
                        "copied); 0: off")
    p.add_argument("--label-smoothing", type=number(0, 1, high_open=True),
                   default=DEFAULTS.label_smoothing,
                   metavar="E", help="cross-entropy label smoothing (e.g. 0.1); 0: off")
    p.add_argument("--mixup", type=number(0), default=DEFAULTS.mixup, metavar="ALPHA",
                   help="train on blends of two photos and of their labels, the share drawn "
                        "from Beta(ALPHA, ALPHA) per batch (e.g. 0.2); 0: off")
    p.add_argument("--freeze-epochs", type=number(0), default=DEFAULTS.freeze_epochs, metavar="N",
                   help="pretrained --weights: train only the classifier head for the first N "
                        "epochs, then every layer (the backbone gets its own warm-up)")
    p.add_argument("--backbone-lr-scale", type=number(0), default=DEFAULTS.backbone_lr_scale,
                   metavar="S", help="pretrained --weights: the backbone's peak learning rate "
                                     "is --lr times this (the head's is --lr)")
    p.add_argument("--augment", choices=["field", "aerial"], default=DEFAULTS.augment,
                   help="field: crop, horizontal flip, small tilt, light (up stays up); aerial: "
                        "also vertical flips and quarter turns (drone photos taken straight "
                        "down have no up)")
