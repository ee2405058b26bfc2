"""Checkpoint averaging arithmetic and model rebuilding from the stored config."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from w2v.asr.checkpoint import average_checkpoints, load_averaged, load_checkpoint
from w2v.asr.model import KIND, AsrConfig, build_model
from w2v.utils import atomic_torch_save

CFG = AsrConfig(num_tokens=7, d_model=16, num_heads=2, num_layers=1, ffn_dim=32, conv_kernel=3,
                subsampling_channels=4)


def _save(path, state, cfg=CFG):
    atomic_torch_save({"model": state, "config": asdict(cfg), "kind": KIND, "epoch": 0}, path)


def test_average_is_exact_mean(tmp_path):
    states = [
        {"w": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([0.1]), "n": torch.tensor(5)},
        {"w": torch.tensor([2.0, 4.0, 7.0]), "b": torch.tensor([0.2]), "n": torch.tensor(9)},
        {"w": torch.tensor([4.0, 0.0, 2.0]), "b": torch.tensor([0.4]), "n": torch.tensor(1)},
    ]
    paths = []
    for i, s in enumerate(states):
        paths.append(tmp_path / f"epoch-{i + 1}.pt")
        _save(paths[-1], s)
    avg = average_checkpoints(paths)
    assert torch.equal(avg["w"], torch.tensor([7 / 3, 2.0, 4.0]))
    assert torch.equal(avg["b"], torch.tensor([0.7 / 3], dtype=torch.float64).float())
    assert avg["b"].dtype == torch.float32
    assert int(avg["n"]) == 5  # integer buffers from the first checkpoint
    assert torch.equal(average_checkpoints(paths[1:2])["w"], states[1]["w"])
    with pytest.raises(ValueError):
        average_checkpoints([])


def test_load_averaged_rebuilds_from_stored_config(tmp_path):
    states = []
    for epoch in (1, 2, 3):
        torch.manual_seed(epoch)
        states.append(build_model(CFG).state_dict())
        _save(tmp_path / f"epoch-{epoch}.pt", states[-1])
    model, cfg = load_averaged(tmp_path, epoch=3, avg=2)
    assert cfg == CFG and not model.training
    for k, v in model.state_dict().items():
        expected = ((states[1][k].double() + states[2][k].double()) / 2).to(v.dtype)
        torch.testing.assert_close(v, expected, rtol=0, atol=0, msg=k)
    single, _ = load_averaged(tmp_path, epoch=1, avg=1)
    for k, v in single.state_dict().items():
        assert torch.equal(v, states[0][k])
    # The model computes with the averaged weights.
    lp, lens = model(torch.randn(1, 40, 80), torch.tensor([40]))
    assert lp.shape == (1, 9, 7) and lens.tolist() == [9]


def test_load_averaged_errors(tmp_path):
    torch.manual_seed(0)
    _save(tmp_path / "epoch-1.pt", build_model(CFG).state_dict())
    other = AsrConfig(**{**asdict(CFG), "d_model": 32, "ffn_dim": 64})
    _save(tmp_path / "epoch-2.pt", build_model(other).state_dict(), other)
    with pytest.raises(FileNotFoundError, match="epoch-3.pt"):
        load_averaged(tmp_path, epoch=3, avg=2)
    with pytest.raises(ValueError, match="differs"):
        load_averaged(tmp_path, epoch=2, avg=2)
    with pytest.raises(ValueError, match="Cannot average"):
        load_averaged(tmp_path, epoch=1, avg=2)
    torch.save({"model": {}, "config": {}, "kind": "wav2vec2"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="kind"):
        load_checkpoint(tmp_path / "x.pt")


def test_export_averaged_is_model_only_and_loads_alone(tmp_path):
    from w2v.asr.checkpoint import export_averaged

    for epoch in (1, 2, 3):
        torch.manual_seed(epoch)
        state = build_model(CFG).state_dict()
        atomic_torch_save({"model": state, "config": asdict(CFG), "kind": KIND, "epoch": epoch,
                           "optimizer": {"state": {i: torch.randn(64, 64) for i in range(4)}}},
                          tmp_path / f"epoch-{epoch}.pt")
    out = export_averaged(tmp_path, epoch=3, avg=2, out=tmp_path / "pretrained-epoch-3-avg-2.pt")
    saved = torch.load(out, weights_only=True)
    assert sorted(saved) == ["averaged_from", "avg", "config", "epoch", "kind", "model"]
    assert saved["averaged_from"] == ["epoch-2.pt", "epoch-3.pt"] and (saved["epoch"], saved["avg"]) == (3, 2)
    assert out.stat().st_size < (tmp_path / "epoch-3.pt").stat().st_size / 2
    averaged, _ = load_averaged(tmp_path, epoch=3, avg=2)
    for p in tmp_path.glob("epoch-*.pt"):  # --keep-last-k may remove them: the export stands alone
        p.unlink()
    model, cfg = load_checkpoint(out)
    assert cfg == CFG
    for k, v in model.state_dict().items():
        assert torch.equal(v, averaged.state_dict()[k]), k


def test_a_corrupt_checkpoint_is_named(tmp_path):
    torch.manual_seed(0)
    _save(tmp_path / "epoch-1.pt", build_model(CFG).state_dict())
    good = (tmp_path / "epoch-1.pt").read_bytes()
    (tmp_path / "epoch-2.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=f"{tmp_path / 'epoch-2.pt'}: truncated or corrupt checkpoint"):
        load_averaged(tmp_path, epoch=2, avg=2)
    with pytest.raises(ValueError, match=f"{tmp_path / 'epoch-2.pt'}: truncated or corrupt checkpoint"):
        load_checkpoint(tmp_path / "epoch-2.pt")
