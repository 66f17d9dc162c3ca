"""Every setting of one training run, without importing torch (so ``busi --help`` answers at once).

``TrainConfig``'s fields are named as ``busi train``'s options; :func:`busi_lib.training.learners.train` runs one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from busi_lib.names import arch_info


@dataclass
class TrainConfig:
    """Every setting of one training run."""

    arch: str = "multitask"
    data: str | list[str] | None = None  # a data folder, or several (sites: busi_lib.data.sites)
    train_sites: list[str] | None = None  # train and validate on these sites only; the others' scans are only tested
    out: str = "runs/train"
    split: str | None = None  # a split CSV to reuse; None: make one from `seed`
    seed: int = 42
    image_size: int = 128
    epochs: int = 10
    batch_size: int = 16
    lr: float | None = 1e-3  # None: use fastai's lr_find suggestion
    # A transfer classifier's schedule (training.learners.stages). None, None: fastai's fine_tune for a pretrained
    # body, one fit_one_cycle otherwise. Numbers: `freeze_epochs` head-only epochs, then `epochs` of the whole
    # network with its body at lr / lr_mult, for pretrained and from-scratch bodies alike.
    freeze_epochs: int | None = None
    lr_mult: float | None = None
    optimizer: str = "adam"  # or "sgd"
    pretrained: bool = True  # ImageNet weights (ignored by from-scratch architectures)
    encoder: str = "tf_efficientnet_lite0"  # encoder of uresnet / multitask (ImageNet weights from pip)
    decoder_norm: str = "batch"  # batch | instance | group: the U-Net decoder's normalisation (models.networks)
    augment: str = "default"  # none | default | strong | geometry | scanner (busi_lib.data.transforms)
    aspect_crop: bool = False  # lesion-preserving aspect-ratio crops on the training scans
    w_cls: float = 0.4  # multitask loss weights
    w_seg: float = 0.6
    dice_weight: float = 1.0  # 0: BCE only for masks
    patience: int | None = None  # early stopping (epochs without improvement)
    monitor: str = "valid_loss"
    valid_frac: float = 0.15
    test_frac: float = 0.15
    max_images: int | None = None  # a stratified subset, for quick runs
    progress: bool = True
    tta: bool = False  # also report metrics with flip test-time augmentation
    num_workers: int | None = None  # DataLoader workers; None: 0 without a GPU, up to 4 with one (training.hardware)
    channels_last: bool = False  # PyTorch's channels_last memory format (faster convolutions on CPU, see RESULTS.md)
    precision: str = "fp32"  # fp32, bf16, fp16 (CUDA only) or mixed (bf16/fp16 on a GPU, fp32 on a CPU)
    cache_dir: str | None = None
    keep_checkpoints: bool = True  # False: delete checkpoints/ once model/ is saved (quick runs, tests)
    extra: dict = field(default_factory=dict)

    @property
    def task(self) -> str:
        return arch_info(self.arch).task

    @property
    def uses_pretrained(self) -> bool:
        return self.pretrained and arch_info(self.arch).pretrained
