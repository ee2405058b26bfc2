"""wav2vec 2.0 BASE on CPU, side by side with its peers, same weights.

Usage:
  OMP_NUM_THREADS=1 python bench/bench_wav2vec2.py [--what forward|pretrain] [--threads 1 2]
                                                   [--seconds 10] [--repeats 3]

--what forward: inference on ``--seconds`` of audio (batch 1): ours fp32 on the kernels
  ``w2v.models.kernels`` picks for this CPU, then on each choice forced (``W2V_FAST_LINEAR=1``:
  oneDNN; ``=0``: torch's own kernels, as torchaudio runs), ours under
  ``torch.autocast("cpu", torch.bfloat16)``, torchaudio ``wav2vec2_base`` fp32, transformers
  ``Wav2Vec2Model`` fp32 (skipped if transformers is missing). Prints the CPU, median seconds,
  real-time factor, ratios to torchaudio fp32, and the bf16 error against our fp32 output.
  Targets: ours fp32 <= 1.0x torchaudio; ours bf16 <= 0.4x torchaudio fp32.
--what pretrain: one training step (forward + backward) per system in ``PRETRAIN_SYSTEMS`` on
  ``--batch`` utterances of ``--seconds`` each. Rows: the encoder alone under the wav2vec 2.0
  masking rate vs torchaudio with the same weights; the full wav2vec 2.0 objective (masking,
  quantizer, negative sampling, contrastive + diversity loss, backward) of ``w2v.ssl`` vs
  transformers ``Wav2Vec2ForPreTraining`` with the same config and encoder weights (BASE, G=2 V=320,
  K=100, p=0.065 M=10, layerdrop 0). More rows: ``register_pretrain_system(name, make_step)`` where
  ``make_step(encoder, waveforms) -> step()``. Prints median seconds and ours/peer ratios.
  Target: ours full step <= 0.7x HF.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torchaudio  # noqa: E402

from w2v.models import SSLEncoder, kernels, wav2vec2_base  # noqa: E402
from w2v.models.loading import convert_hf_state_dict  # noqa: E402

SAMPLE_RATE = 16000

StepFactory = Callable[[SSLEncoder, torch.Tensor], "Callable[[], object] | None"]
PRETRAIN_SYSTEMS: dict[str, StepFactory] = {}


def register_pretrain_system(name: str, make_step: StepFactory) -> None:
    """Add a row to ``--what pretrain``: ``make_step(our BASE encoder, waveforms [B, T])`` returns a
    callable running one full training step (forward, loss, backward), or None to skip the row."""
    PRETRAIN_SYSTEMS[name] = make_step


def median_times(systems: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per system; runs are interleaved so a load change on a shared machine hits all."""
    for fn in systems.values():
        fn()  # warm-up: allocator, oneDNN primitive cache
    times: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(repeats):
        for name, fn in systems.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def cpu_name() -> str:
    """``model name`` and ``vendor_id`` of /proc/cpuinfo, else what the platform module knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    fields = {}
    for line in lines:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return f"{fields.get('model name', platform.machine())} ({fields.get('vendor_id', '?')})"


def torchaudio_peer(ours: SSLEncoder) -> torch.nn.Module:
    peer = torchaudio.models.wav2vec2_base().eval()
    state = {k: v for k, v in ours.state_dict().items() if k != "mask_embedding"}
    peer.load_state_dict(state, strict=True)  # our parameter names are torchaudio's
    return peer


def huggingface_peer(ours: SSLEncoder) -> torch.nn.Module | None:
    try:
        import transformers
    except ImportError:
        return None
    cfg = transformers.Wav2Vec2Config(
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0
    )
    peer = transformers.Wav2Vec2Model(cfg).eval()
    ours_state = ours.state_dict()
    state = {}
    for key in peer.state_dict():
        (ours_key,) = convert_hf_state_dict({key: torch.empty(0)})
        state[key] = ours_state[ours_key]
    peer.load_state_dict(state, strict=True)
    return peer


def bench_forward(threads: list[int], seconds: float, repeats: int) -> None:
    torch.manual_seed(0)
    ours = wav2vec2_base().eval()
    ta_model = torchaudio_peer(ours)
    hf_model = huggingface_peer(ours)
    x = torch.randn(1, int(seconds * SAMPLE_RATE))

    with torch.inference_mode():
        ref_layers, _ = ours.extract_features(x)
        ta_layers, _ = ta_model.extract_features(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf_layers, _ = ours.extract_features(x)
        same = max(float((a - b).abs().max()) for a, b in zip(ref_layers, ta_layers))
        errs = [(b.float() - a).abs() for a, b in zip(ref_layers, bf_layers)]
        hf_diff = None
        if hf_model is not None:
            hf_last = hf_model(x).last_hidden_state
            hf_diff = float((hf_last - ref_layers[-1]).abs().max())
    print(f"CPU: {cpu_name()}; {kernels.ENV}={os.environ.get(kernels.ENV, '(unset)')}")
    print(f"wav2vec2 BASE ({sum(p.numel() for p in ta_model.parameters()) / 1e6:.2f}M params), "
          f"{seconds:g} s of audio, batch 1, {ref_layers[-1].shape[1]} frames")
    print(f"same weights: max |ours - torchaudio| over layers = {same:.2e}"
          + (f", max |ours - HF| last layer = {hf_diff:.2e}" if hf_diff is not None else ""))
    print(f"bf16 autocast vs fp32: last layer max {float(errs[-1].max()):.3f} mean {float(errs[-1].mean()):.4f}; "
          f"all layers max {max(float(e.max()) for e in errs):.3f} "
          f"mean {statistics.mean(float(e.mean()) for e in errs):.4f}"
          f" (outputs have std {float(ref_layers[-1].std()):.2f})")

    def ours_fp32():
        return ours(x)

    def ours_bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return ours(x)

    def with_kernels(setting: str, fn: Callable[[], object]) -> Callable[[], object]:
        def run():
            saved = os.environ.get(kernels.ENV)
            os.environ[kernels.ENV] = setting
            try:
                return fn()
            finally:
                if saved is None:
                    del os.environ[kernels.ENV]
                else:
                    os.environ[kernels.ENV] = saved

        return run

    systems = {
        "ours fp32": ours_fp32,
        "ours fp32, oneDNN (=1)": with_kernels("1", ours_fp32),
        "ours fp32, torch kernels (=0)": with_kernels("0", ours_fp32),
        "ours bf16": ours_bf16,
        "torchaudio fp32": lambda: ta_model(x),
    }
    if hf_model is not None:
        systems["HF fp32"] = lambda: hf_model(x)

    print(f"\n{'threads':>7} {'system':<30} {'seconds':>8} {'RTF':>7} {'/torchaudio fp32':>17}")
    for n in threads:
        torch.set_num_threads(n)
        with torch.inference_mode():
            timings = median_times(systems, repeats)
        base = timings["torchaudio fp32"]
        for name, t in timings.items():
            print(f"{n:>7} {name:<30} {t:8.3f} {t / seconds:7.3f} {t / base:16.2f}x")
    print("targets: ours fp32 <= 1.00x, ours bf16 <= 0.40x")


def _encoder_step(encoder: SSLEncoder, x: torch.Tensor) -> Callable[[], object]:
    """Masked forward (~49% of frames, as p=0.065, M=10) + backward of a proxy loss on the outputs."""
    encoder.train()
    frames = encoder.config.num_frames(x.shape[1])
    gen = torch.Generator().manual_seed(0)
    starts = torch.rand(x.shape[0], frames, generator=gen) < 0.065
    mask = torch.zeros(x.shape[0], frames, dtype=torch.bool)
    for offset in range(10):
        mask[:, offset:] |= starts[:, : frames - offset]

    def step():
        encoder.zero_grad(set_to_none=True)
        feats, lengths = encoder.feature_extractor(x)
        out = encoder.encode(feats, lengths, mask=mask)
        loss = out.output[mask].pow(2).mean() + 10 * feats.float().pow(2).mean()
        loss.backward()
        return loss

    return step


def _torchaudio_step(encoder: SSLEncoder, x: torch.Tensor) -> Callable[[], object]:
    """torchaudio with the same weights (no mask embedding: unmasked), same proxy loss shape."""
    peer = torchaudio_peer(encoder).train()

    def step():
        peer.zero_grad(set_to_none=True)
        feats, _ = peer.feature_extractor(x, None)
        out = peer.encoder(feats)
        loss = out.pow(2).mean() + 10 * feats.pow(2).mean()
        loss.backward()
        return loss

    return step


def _ours_w2v2_step(encoder: SSLEncoder, x: torch.Tensor) -> Callable[[], object]:
    """w2v.ssl's wav2vec 2.0 objective: masking, Gumbel quantizer, negatives, L_m + 0.1 L_d + penalty."""
    from w2v.ssl.pretraining import Wav2Vec2PretrainConfig, Wav2Vec2Pretrainer

    pretrainer = Wav2Vec2Pretrainer(encoder, Wav2Vec2PretrainConfig()).train()

    def step():
        pretrainer.zero_grad(set_to_none=True)
        out = pretrainer(x)
        out.loss.backward()
        return out.loss

    return step


def _ours_w2v2_bf16_step(encoder: SSLEncoder, x: torch.Tensor) -> Callable[[], object]:
    """The same objective with forward and loss under bf16 autocast, as ``pretrain --bf16 true``."""
    from w2v.ssl.pretraining import Wav2Vec2PretrainConfig, Wav2Vec2Pretrainer

    pretrainer = Wav2Vec2Pretrainer(encoder, Wav2Vec2PretrainConfig()).train()

    def step():
        pretrainer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = pretrainer(x)
        out.loss.float().backward()
        return out.loss

    return step


def hf_pretraining_peer(ours: SSLEncoder):
    """transformers ``Wav2Vec2ForPreTraining`` with our encoder's config and weights, or None."""
    try:
        import transformers
    except ImportError:
        return None
    c = ours.config
    cfg = transformers.Wav2Vec2Config(
        hidden_dropout=c.dropout, attention_dropout=c.attention_dropout, activation_dropout=c.activation_dropout,
        feat_proj_dropout=c.dropout_input, layerdrop=c.layerdrop, feat_quantizer_dropout=0.0,
        mask_time_prob=0.65, mask_time_length=10, num_negatives=100, num_codevector_groups=2,
        num_codevectors_per_group=320, codevector_dim=256, proj_codevector_dim=256,
        contrastive_logits_temperature=0.1, diversity_loss_weight=0.1,
    )
    peer = transformers.Wav2Vec2ForPreTraining(cfg).train()
    ours_state = ours.state_dict()
    encoder_state = {}
    for key in peer.wav2vec2.state_dict():
        (ours_key,) = convert_hf_state_dict({key: torch.empty(0)})
        encoder_state[key] = ours_state[ours_key]
    peer.wav2vec2.load_state_dict(encoder_state, strict=True)
    return peer


def _hf_w2v2_step(encoder: SSLEncoder, x: torch.Tensor) -> Callable[[], object] | None:
    """HF: the mask and negatives are drawn by its own helpers (numpy) inside the timed step, as ours."""
    peer = hf_pretraining_peer(encoder)
    if peer is None:
        return None
    from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

    shape = (x.shape[0], encoder.config.num_frames(x.shape[1]))

    def step():
        peer.zero_grad(set_to_none=True)
        mask = _compute_mask_indices(shape, mask_prob=0.65, mask_length=10, min_masks=2)
        negatives = _sample_negative_indices(shape, 100, mask)
        out = peer(x, mask_time_indices=torch.from_numpy(mask), sampled_negative_indices=torch.from_numpy(negatives))
        # HF sums over masked frames; divide as ours averages (the backward pass is the same work)
        (out.loss / int(mask.sum())).backward()
        return out.loss

    return step


register_pretrain_system("ours encoder step", _encoder_step)
register_pretrain_system("torchaudio encoder step", _torchaudio_step)
register_pretrain_system("ours wav2vec2 pretrain step", _ours_w2v2_step)
register_pretrain_system("ours wav2vec2 pretrain step bf16", _ours_w2v2_bf16_step)
register_pretrain_system("HF Wav2Vec2ForPreTraining step", _hf_w2v2_step)

_PEERS = {
    "ours encoder step": "torchaudio encoder step",
    "ours wav2vec2 pretrain step": "HF Wav2Vec2ForPreTraining step",
    "ours wav2vec2 pretrain step bf16": "HF Wav2Vec2ForPreTraining step",
}


def bench_pretrain(threads: list[int], seconds: float, repeats: int, batch: int = 2) -> None:
    torch.manual_seed(0)
    x = torch.randn(batch, int(seconds * SAMPLE_RATE))
    print(f"one training step, wav2vec2 BASE (layerdrop 0), {batch} x {seconds:g} s of audio")
    print(f"\n{'threads':>7} {'system':<32} {'seconds':>8} {'ours/peer':>10}")
    for n in threads:
        torch.set_num_threads(n)
        steps = {}
        for name, make_step in PRETRAIN_SYSTEMS.items():
            torch.manual_seed(0)
            step = make_step(wav2vec2_base(layerdrop=0.0), x)
            if step is not None:  # a peer that is not installed
                steps[name] = step
        timings = median_times(steps, repeats)
        for name, seconds_per_step in timings.items():
            peer = _PEERS.get(name)
            ratio = f"{seconds_per_step / timings[peer]:9.2f}x" if peer in timings else ""
            print(f"{n:>7} {name:<32} {seconds_per_step:8.3f} {ratio:>10}")
    print("target: ours wav2vec2 pretrain step <= 0.70x HF")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--what", choices=["forward", "pretrain"], default="forward")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--seconds", type=float, default=10.0, help="audio per forward")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per system (median reported)")
    p.add_argument("--batch", type=int, default=2, help="utterances per training step (--what pretrain)")
    args = p.parse_args()
    if args.what == "forward":
        bench_forward(args.threads, args.seconds, args.repeats)
    else:
        bench_pretrain(args.threads, args.seconds, args.repeats, args.batch)


if __name__ == "__main__":
    main()
