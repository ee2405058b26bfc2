"""DDP under torchrun (2 processes, gloo, CPU): disjoint batches per rank, identical weights."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch

WORKER = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist
    from w2v.asr.model import AsrConfig
    from w2v.asr.train import TrainConfig, train

    exp, lang, train_cuts, dev_cuts = sys.argv[1:5]
    cfg = TrainConfig(exp_dir=exp, lang_dir=lang, train_cuts=[train_cuts], dev_cuts=[dev_cuts],
                      token_type="char", num_epochs=2, max_duration=1.5, num_buckets=2,
                      warmup_steps=3, lr=3e-3, log_batches=True, progress=False, seed=3)
    model = AsrConfig(d_model=32, num_heads=4, num_layers=1, ffn_dim=64, conv_kernel=5,
                      subsampling_channels=8)
    result = train(cfg, model)
    torch.save(result.model.state_dict(), f"{exp}/final.rank{dist.get_rank()}.pt")
    with open(f"{exp}/history.rank{dist.get_rank()}.txt", "w") as f:
        f.write(repr(result.history["train_loss"]))
    dist.destroy_process_group()
    """
)


def test_torchrun_two_ranks(toy_data, tmp_path):
    lang, train_path, dev_path = toy_data
    exp = tmp_path / "exp"
    exp.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(exp), str(lang), str(train_path), str(dev_path)],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    batches = {}
    for rank in (0, 1):
        lines = (exp / f"batches.rank{rank}.txt").read_text().splitlines()
        batches[rank] = [line.split() for line in lines]
    for epoch in ("1", "2"):
        ids = [{c for b in batches[r] if b[0] == epoch for c in b[2:]} for r in (0, 1)]
        assert ids[0] and ids[1], "a rank read nothing"
        assert not ids[0] & ids[1], f"epoch {epoch}: ranks share cuts {ids[0] & ids[1]}"
        # Same number of steps on both ranks (DDP would hang otherwise).
        assert sum(b[0] == epoch for b in batches[0]) == sum(b[0] == epoch for b in batches[1])

    w0 = torch.load(exp / "final.rank0.pt")
    w1 = torch.load(exp / "final.rank1.pt")
    ckpt = torch.load(exp / "epoch-2.pt", weights_only=False)["model"]
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
        assert torch.equal(w0[k], ckpt[k]), k
    # Only rank 0 writes checkpoints and logs; both ranks report the same (all-reduced) loss.
    assert sorted(p.name for p in exp.glob("epoch-*.pt")) == ["epoch-1.pt", "epoch-2.pt"]
    assert (exp / "history.rank0.txt").read_text() == (exp / "history.rank1.txt").read_text()
