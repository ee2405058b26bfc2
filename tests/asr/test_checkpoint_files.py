"""A CTC checkpoint written by training needs nothing beyond torch's weights_only unpickler."""

from __future__ import annotations

import torch

from w2v.asr.model import KIND, AsrConfig
from w2v.asr.train import TrainConfig, train
from w2v.serialization import load


def test_epoch_checkpoint_loads_with_plain_weights_only(toy_data, tmp_path):
    lang, train_path, dev_path = toy_data
    exp = tmp_path / "exp"
    cfg = TrainConfig(exp_dir=str(exp), lang_dir=str(lang), train_cuts=[str(train_path)], dev_cuts=[str(dev_path)],
                      token_type="char", num_epochs=1, max_duration=2.0, num_buckets=2, warmup_steps=5,
                      max_batches_per_epoch=2, progress=False, tensorboard=False)
    train(cfg, AsrConfig(d_model=32, num_heads=4, num_layers=1, ffn_dim=64, conv_kernel=5, subsampling_channels=8))
    path = exp / "epoch-1.pt"
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    plain = torch.load(path, weights_only=True)
    assert plain["kind"] == KIND and plain["epoch"] == 1
    # the sampler's state, both configs and the optimizer / scheduler states are plain data
    assert {"model", "config", "optimizer", "scheduler", "sampler", "train_config"} <= set(plain)
    ours = load(path)
    assert ours.keys() == plain.keys() and ours["config"] == plain["config"]
    assert all(torch.equal(ours["model"][k], v) for k, v in plain["model"].items())
