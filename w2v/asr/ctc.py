"""CTC loss through k2 (the training default) and torch's, for the same inputs.

The two agree (to 1e-5 relative with k2's training beam on peaked posteriors, tests/asr/test_ctc.py)
and either is a small part of a training step (bench/bench_ctc.py times both). k2 stays the
default: it scores the same ``DenseFsaVec`` the decoders (H/HLG) consume.
``ctc_impl="torch"`` (``--ctc-impl torch``) switches.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.nn import functional as F


def k2_ctc_loss(
    log_probs: torch.Tensor,
    out_lens: torch.Tensor,
    targets: Sequence[Sequence[int]],
    output_beam: float = 10.0,
) -> torch.Tensor:
    """Per-utterance CTC negative log-likelihood through k2.

    Args:
        log_probs: ``[batch, frames, tokens]`` log-softmax output, blank = 0.
        out_lens: ``[batch]`` valid frames.
        targets: token ids per utterance (no blanks).
        output_beam: k2's pruning beam over the forward scores; the loss is exact for any path
            within it (10 as icefall; a larger beam only matters for very unlikely targets).
    Returns:
        ``[batch]`` losses in the batch's order; ``inf`` where the target cannot fit.
    """
    import k2

    b = log_probs.size(0)
    # k2 wants supervision segments sorted by decreasing duration; the CTC graphs follow that order.
    order = torch.argsort(out_lens.cpu(), descending=True, stable=True)
    segments = torch.stack(
        [order, torch.zeros_like(order), out_lens.cpu()[order]], dim=1
    ).to(torch.int32)
    dense = k2.DenseFsaVec(log_probs, segments)
    graph = k2.ctc_graph([list(targets[i]) for i in order.tolist()], device=log_probs.device)
    sorted_loss = k2.ctc_loss(
        graph, dense, output_beam=output_beam, reduction="none", use_double_scores=True
    )
    loss = torch.empty(b, dtype=sorted_loss.dtype, device=sorted_loss.device)
    loss[order.to(loss.device)] = sorted_loss
    return loss.to(log_probs.dtype)


def torch_ctc_loss(
    log_probs: torch.Tensor, out_lens: torch.Tensor, targets: Sequence[Sequence[int]]
) -> torch.Tensor:
    """Per-utterance CTC negative log-likelihood through ``torch.nn.functional.ctc_loss``."""
    device = log_probs.device
    target_lens = torch.tensor([len(t) for t in targets], dtype=torch.long, device=device)
    flat = torch.tensor([i for t in targets for i in t], dtype=torch.long, device=device)
    return F.ctc_loss(
        log_probs.transpose(0, 1),
        flat,
        out_lens.to(device=device, dtype=torch.long),
        target_lens,
        blank=0,
        reduction="none",
        zero_infinity=False,
    )


def resolve_ctc_impl(impl: str, device: torch.device) -> str:
    """``impl``, except that k2's loss on a GPU needs a k2 built with CUDA: torch's otherwise."""
    if impl == "k2" and device.type == "cuda":
        import k2

        if not getattr(k2, "with_cuda", False):
            import logging

            logging.getLogger(__name__).warning(
                "this k2 has no CUDA: the CTC loss on %s is torch's (tools/install_k2.sh --device cuda "
                "installs a CUDA k2)", device)
            return "torch"
    return impl


def ctc_loss(
    log_probs: torch.Tensor,
    out_lens: torch.Tensor,
    targets: Sequence[Sequence[int]],
    impl: str = "k2",
) -> torch.Tensor:
    """``[batch]`` CTC losses with ``impl`` in {"k2", "torch"}."""
    if impl == "k2":
        return k2_ctc_loss(log_probs, out_lens, targets)
    if impl == "torch":
        return torch_ctc_loss(log_probs, out_lens, targets)
    raise ValueError(f"Unknown CTC implementation {impl!r}; expected 'k2' or 'torch'")


def greedy_keep(log_probs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy CTC search without the lists: ``(best, keep)``, the frame-wise argmax ``[B, T]`` and
    where it is output (inside the length, not blank 0, not a repeat of the frame before)."""
    best = log_probs.argmax(-1)
    valid = torch.arange(best.shape[1], device=best.device)[None] < lengths.to(best.device)[:, None]
    new = torch.ones_like(best, dtype=torch.bool)
    new[:, 1:] = best[:, 1:] != best[:, :-1]
    return best, (best != 0) & new & valid
