"""The recipe knobs of issue 12: EMA, label smoothing, freezing / backbone LR, fixed schedule,
aerial augmentation; and that, off, they leave the recipe as it was."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from model.checkpoint import load_checkpoint
from model.preprocessing import PreprocessSpec
from training.augment import augment_batch
from training.cli import build_parser
from training.config import FitConfig
from training.ema import WeightEma
from training.errors import TrainingError
from training.fit import fit
from training.loop import train_one_epoch
from training.optim import build_optimizer, build_optimizer_and_schedule, build_schedule
from training.state import load_state, state_path

from .conftest import tiny_config


class Killed(Exception):
    """Stands in for SIGKILL between two epochs."""


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 2))


def test_ema_starts_as_a_copy_then_follows_with_its_decay_and_averages_float_buffers():
    model = small_net()
    ema = WeightEma(model, decay=0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update()  # first update: the mean of one set of weights is that set
    for mine, theirs in zip(ema.module.parameters(), model.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    before = [p.clone() for p in ema.module.parameters()]
    ema.updates = 100  # past the early plain-mean phase: d = 0.9
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        mean_before = ema.module[1].running_mean.clone()
        model[1].running_mean.fill_(3.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update()
    for old, mine in zip(before, ema.module.parameters(), strict=True):
        assert torch.allclose(mine, old + 0.1)
    # running statistics averaged like the weights (they must describe the averaged network)
    assert torch.allclose(ema.module[1].running_mean, 0.9 * mean_before + 0.1 * 3.0)
    assert int(ema.module[1].num_batches_tracked) == 7  # an integer counter is copied
    assert not any(p.requires_grad for p in ema.module.parameters())
    with pytest.raises(ValueError):
        WeightEma(model, decay=1.0)


def one_batch_epoch(model: nn.Module, **knobs) -> float:
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    loader = DataLoader(TensorDataset(images, torch.zeros(4, dtype=torch.long)), batch_size=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    stats = train_one_epoch(model, loader, optimizer, schedule, device=torch.device("cpu"),
                            precision="fp32", spec=PreprocessSpec(input_size=16), **knobs)
    return stats.loss


class Confident(nn.Module):
    """Always says class 0 with logits +-20, whatever the image."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([20.0, -20.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(len(x), 2) + 0 * x.mean()


def test_label_smoothing_charges_a_confident_right_answer():
    assert one_batch_epoch(Confident()) < 1e-6
    smoothed = one_batch_epoch(Confident(), label_smoothing=0.1)
    # eps/2 of the target mass on the wrong class, which has log-probability -40
    assert smoothed == pytest.approx(0.05 * 40, rel=0.01)


class Recorder(nn.Module):
    """Returns fixed logits and keeps the batch it was shown."""

    def __init__(self, logits: list[list[float]]) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        return self.logits + 0 * x.mean()


def test_mixup_blends_each_image_with_a_partner_and_the_loss_with_its_label():
    from training import loop

    images = torch.stack([torch.full((3, 16, 16), 0, dtype=torch.uint8),
                          torch.full((3, 16, 16), 200, dtype=torch.uint8)])
    labels = torch.tensor([0, 1])
    logits = [[2.0, -1.0], [0.5, 0.25]]
    loader = DataLoader(TensorDataset(images, labels), batch_size=2)
    draws = []

    def recorded_draw(n: int, alpha: float):
        draw = real_draw(n, alpha)
        draws.append(draw)
        return draw

    real_draw = loop.mixup_draw

    def epoch(model: Recorder, alpha: float) -> float:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        # identity normalisation and no crop, flip or jitter: the blend is all that changes pixels
        spec = PreprocessSpec(input_size=16, mean=(0.0,) * 3, std=(1 / 255,) * 3)
        with mock.patch.object(loop, "augment_batch", lambda x, **_: x.float()), \
                mock.patch.object(loop, "mixup_draw", recorded_draw):
            return train_one_epoch(model, loader, optimizer, schedule,
                                   device=torch.device("cpu"), precision="fp32", spec=spec,
                                   mixup=alpha).loss

    ce = nn.functional.cross_entropy
    z, pixel = torch.tensor(logits), torch.tensor([0.0, 200.0])
    plain = Recorder(logits)
    assert epoch(plain, 0.0) == pytest.approx(float(ce(z, labels)), rel=1e-5)
    assert torch.allclose(plain.seen[:, 0, 0, 0], pixel)

    torch.manual_seed(0)
    for _ in range(20):  # until the partners differ from the rows (a permutation of 2 rows)
        mixed = Recorder(logits)
        loss = epoch(mixed, 0.4)
        lam, partner = draws[-1]
        if partner.tolist() == [1, 0]:
            break
    assert partner.tolist() == [1, 0] and 0.0 < lam < 1.0
    assert torch.allclose(mixed.seen[:, 0, 0, 0], lam * pixel + (1 - lam) * pixel[partner])
    expected = lam * ce(z, labels) + (1 - lam) * ce(z, labels[partner])
    assert loss == pytest.approx(float(expected), rel=1e-5)


def test_mixup_off_or_a_lone_image_draws_nothing():
    from training.loop import mixup_draw
    state = torch.random.get_rng_state()
    assert mixup_draw(8, 0.0) == (1.0, None)
    assert mixup_draw(1, 0.2) == (1.0, None)
    assert torch.equal(torch.random.get_rng_state(), state)  # augmentation draws unchanged


def test_train_one_epoch_updates_the_ema_every_step():
    model = small_net()
    ema = WeightEma(model, decay=0.5)
    one_batch_epoch(model, ema=ema)
    assert ema.updates == 1


def test_defaults_keep_the_old_optimizer_groups_and_schedule():
    model = small_net()
    config = FitConfig(data=Path("."), output=Path("."), weights="imagenet")
    optimizer, schedule = build_optimizer_and_schedule(model, config, steps_per_epoch=4)
    assert len(optimizer.param_groups) == 2
    assert all("backbone" not in g for g in optimizer.param_groups)
    assert [g["lr"] for g in optimizer.param_groups] == [config.lr * 0.01] * 2  # warm-up from 1 %
    assert config.ema_decay == 0 and config.label_smoothing == 0 and config.augment == "field"


def test_freeze_holds_the_backbone_then_warms_it_up_while_the_head_trains():
    model = small_net()
    config = FitConfig(data=Path("."), output=Path("."), weights="some.pth", lr=0.1,
                       epochs=4, warmup_epochs=1.0, freeze_epochs=1.0, backbone_lr_scale=0.5)
    optimizer, schedule = build_optimizer_and_schedule(model, config, steps_per_epoch=4)
    head = [g for g in optimizer.param_groups if not g["backbone"]]
    backbone = [g for g in optimizer.param_groups if g["backbone"]]
    assert len(head) == 2 and len(backbone) == 2 and optimizer.param_groups[0] is head[0]
    conv_before = model[0].weight.detach().clone()
    lrs = []
    for _ in range(16):
        lrs.append((head[0]["lr"], backbone[0]["lr"]))
        model(torch.randn(2, 3, 8, 8)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        schedule.step()
        if len(lrs) == 4:  # end of the frozen epoch: the backbone has not moved
            assert torch.equal(model[0].weight, conv_before)
    assert all(b == 0.0 for _, b in lrs[:4]) and all(h > 0 for h, _ in lrs)
    assert lrs[4][1] < lrs[7][1]  # the backbone's own warm-up
    assert lrs[7][1] == pytest.approx(lrs[7][0] * 0.5)  # then the head's schedule, scaled
    assert not torch.equal(model[0].weight, conv_before)

    scratch = FitConfig(data=Path("."), output=Path("."), weights="none", freeze_epochs=1.0,
                        backbone_lr_scale=0.5)
    optimizer, _ = build_optimizer_and_schedule(small_net(), scratch, steps_per_epoch=4)
    assert len(optimizer.param_groups) == 2  # from scratch: no backbone to protect
    with pytest.raises(ValueError, match="cosine"):
        build_schedule(build_optimizer(small_net(), 0.1, 0.0, split_head=True), 10, 2,
                       "onecycle", frozen_steps=2)


def test_aerial_augmentation_also_flips_vertically_and_field_never_does():
    ramp = torch.arange(32, dtype=torch.float32).mul(8).view(1, 1, 32, 1).expand(64, 3, 32, 32)
    images = ramp.to(torch.uint8).contiguous()  # dark at the top, bright at the bottom

    def upside_down(out: torch.Tensor) -> torch.Tensor:
        top, bottom = out[:, :, :8].mean(dim=(1, 2, 3)), out[:, :, -8:].mean(dim=(1, 2, 3))
        return top > bottom

    field = augment_batch(images, torch.Generator().manual_seed(0))
    aerial = augment_batch(images, torch.Generator().manual_seed(0), aerial=True)
    assert not upside_down(field).any()
    assert 5 < int(upside_down(aerial).sum()) < 59
    assert aerial.min() >= 0 and aerial.max() <= 255


def test_patience_zero_trains_every_epoch_and_keeps_the_last(kaggle_data, tmp_path):
    result = fit(tiny_config(kaggle_data, tmp_path / "m.safetensors", epochs=3, patience=0))
    assert result["epochs_run"] == 3 and result["kept"]["epoch"] == 3
    meta = load_checkpoint(tmp_path / "m.safetensors").metadata
    assert meta.metrics["validation"]["epoch"] == 3


def test_fit_with_ema_saves_the_average_and_resumes_it(kaggle_data, tmp_path):
    def kill_after_first(epoch, record):
        if epoch == 1:
            raise Killed

    knobs = dict(epochs=3, patience=0, ema_decay=0.9, label_smoothing=0.1,
                 keep_train_state=True)
    killed = tmp_path / "killed.safetensors"
    with pytest.raises(Killed):
        fit(tiny_config(kaggle_data, killed, **knobs), on_epoch_end=kill_after_first)
    assert load_state(state_path(killed))["ema"]["updates"] > 0
    fit(tiny_config(kaggle_data, killed, resume=True, **knobs))
    straight = tmp_path / "straight.safetensors"
    fit(tiny_config(kaggle_data, straight, **knobs))

    state = load_state(state_path(straight))
    saved = load_checkpoint(straight).model.state_dict()
    ema, live = state["ema"]["model"], state["model"]
    assert all(torch.allclose(saved[k].float(), ema[k].float()) for k in saved)  # the average
    assert any(not torch.allclose(ema[k].float(), live[k].float()) for k in ema
               if ema[k].is_floating_point())  # ... not the live weights
    resumed = load_checkpoint(killed).model.state_dict()
    assert all(torch.allclose(resumed[k].float(), saved[k].float(), atol=1e-4) for k in saved)


def test_cli_recipe_flags_reach_the_config():
    args = build_parser().parse_args([
        "fit", "--data", "d", "--output", "o", "--ema-decay", "0.98", "--label-smoothing", "0.1",
        "--freeze-epochs", "1", "--backbone-lr-scale", "0.2", "--augment", "aerial",
        "--patience", "0", "--mixup", "0.2"])
    fields = set(FitConfig.__dataclass_fields__)
    config = FitConfig(**{k: v for k, v in vars(args).items() if k in fields})
    assert (config.ema_decay, config.label_smoothing, config.freeze_epochs,
            config.backbone_lr_scale, config.augment, config.patience, config.mixup) == (
        0.98, 0.1, 1.0, 0.2, "aerial", 0, 0.2)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "--data", "d", "--output", "o", "--mixup", "-1"])


def test_resume_accepts_a_state_written_before_mixup_and_fold_splits_were_recorded(
        kaggle_data, tmp_path):
    """A state from the version before (its options lack ``mixup`` and ``fold_inner_split``)
    trained without mixup and with a validation split: resuming it is the same run."""
    from training.state import save_state

    out = tmp_path / "older.safetensors"
    with pytest.raises(Killed):
        fit(tiny_config(kaggle_data, out, epochs=2, keep_train_state=True),
            on_epoch_end=_kill_after_first)
    state = load_state(state_path(out))
    del state["options"]["mixup"], state["options"]["fold_inner_split"]
    save_state(state_path(out), state)
    fit(tiny_config(kaggle_data, out, epochs=2, keep_train_state=True, resume=True))
    assert load_state(state_path(out))["epoch"] == 2
    with pytest.raises(TrainingError, match="was made with --mixup 0.0, this run has 0.2"):
        fit(tiny_config(kaggle_data, out, epochs=2, mixup=0.2, resume=True))


def _kill_after_first(epoch: int, record: dict) -> None:
    if epoch == 1:
        raise Killed


def test_resume_with_ema_refuses_a_state_without_an_average(kaggle_data, tmp_path):
    out = tmp_path / "plain.safetensors"
    fit(tiny_config(kaggle_data, out, epochs=1, keep_train_state=True))
    with pytest.raises(TrainingError, match="was made with --ema-decay 0.0, this run has 0.9"):
        fit(tiny_config(kaggle_data, out, epochs=1, ema_decay=0.9, resume=True))


def test_default_input_size_and_schedule_follow_the_weights():
    """Pretrained: 224 px, 10 epochs, 1 of warm-up (row m4); from scratch: 160 px, 20 epochs, 2 of
    warm-up (row r4) (docs/benchmarks.md); an explicit flag always wins."""
    parser = build_parser()
    fields = set(FitConfig.__dataclass_fields__)

    def config(*flags: str) -> FitConfig:
        args = parser.parse_args(["fit", "--data", "d", "--output", "o", *flags])
        return FitConfig(**{k: v for k, v in vars(args).items() if k in fields})

    def recipe(c: FitConfig) -> tuple:
        return c.image_size, c.epochs, c.warmup_epochs

    assert recipe(config()) == (224, 10, 1.0)  # --weights imagenet is the default
    assert recipe(config("--weights", "backbone.pth")) == (224, 10, 1.0)
    assert recipe(config("--weights", "none")) == (160, 20, 2.0)
    assert recipe(config("--weights", "none", "--image-size", "96", "--epochs", "3",
                         "--warmup-epochs", "0")) == (96, 3, 0.0)
    assert recipe(config("--image-size", "128")) == (128, 10, 1.0)
    meta = config("--weights", "none").as_metadata()  # the checkpoint records what ran
    assert (meta["image_size"], meta["epochs"], meta["warmup_epochs"]) == (160, 20, 2.0)
