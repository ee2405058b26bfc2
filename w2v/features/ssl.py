"""Self-supervised representations as ASR features: one layer of a wav2vec-family encoder,
stored in lhotse feature storage exactly like fbank, so training and decoding read either.

The encoder is anything :func:`w2v.models.load_pretrained` reads (a fairseq ``.pt``, a Hugging
Face directory, a checkpoint of this project, or a pretraining exp dir: its newest
``checkpoint-N.pt``). Layer ``L`` (1-based) is the output of the L-th Transformer block (context
layer for wav2vec 1.0 / vq-wav2vec), torchaudio's ``extract_features(...)[L - 1]``.

Batches: the cuts of a chunk are sorted by length and encoded in padded batches of at most
``BatchLimits.seconds`` of padded audio, their lengths passed so the encoder masks the padding;
each cut keeps its own frames. A padded batch gives every cut its one-cut-at-a-time features (the
group norm of a BASE-style conv front end pools over valid frames only); the extractor checks
this once on random audio and encodes one cut at a time, saying so in the log, for an encoder
where it does not hold.

Long recordings: audio longer than ``max_segment_seconds`` is encoded in windows of at most that
length on the encoder's frame grid, each with ``context_seconds`` of context on both sides whose
frames are dropped when the windows are joined: memory stays bounded, the frame count is the
unsplit one, and frames differ from the unsplit encoding only through what lies beyond the
context: attention, and per-utterance normalisation (a group-norm conv front end, normalised
waveforms, wav2vec 1.0's norms), which a window computes over itself.

Precision: fp32, or bf16 autocast (``bf16=True``, on CPU and CUDA); stored in fp32 either way.
Frames are 20 ms for the wav2vec 2.0 family (10 ms for wav2vec 1.0); the stored matrix has
exactly lhotse's ``compute_num_frames`` rows (an unpadded conv front end gives up to receptive
field / hop fewer: 1 for wav2vec 2.0, 3-4 for wav2vec 1.0; the last frame is repeated).

Storage: ``numpy`` (float32 ``.npy`` files, exact; a 768-dim BASE layer takes 154 kB per second of
audio, 530 GB for LibriSpeech's 960 h) or ``lilcom`` (lossy compression, several times smaller;
``bench/bench_ssl_features.py`` prints its error next to bf16's).

Parts are done in chunks shared by worker processes and shards (:mod:`w2v.features.parts`):
resumable, merged into the part's manifest in input order.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from lhotse import CutSet, LilcomChunkyWriter, NumpyFilesWriter
from lhotse.features.base import Features
from lhotse.utils import compute_num_frames, fastcopy

from w2v.features.fbank import FailedCut
from w2v.features.parts import ChunkedPart, Shard, manifest_stem
from w2v.models import load_pretrained
from w2v.runtime import SAMPLE_RATE
from w2v.runtime.checkpoints import list_checkpoints
from w2v.utils import atomic_write_text

log = logging.getLogger(__name__)

FEATURE_TYPE = "w2v-ssl"
STORAGES = ("numpy", "lilcom")
SPEC_FILE = "ssl_features.json"
# Cuts per resumable chunk of a part (a killed extraction redoes at most one chunk per worker).
CHUNK_CUTS = 500
MAX_SEGMENT_SECONDS = 30.0
CONTEXT_SECONDS = 2.0
# A padded probe pair may differ from the cut alone by rounding (TF32 convolutions on CUDA), not by
# what a leaking padding does (tens of percent).
_PROBE_TOLERANCE = 1e-2


def resolve_checkpoint(path: str | Path) -> Path:
    """``path`` itself, or the newest ``checkpoint-N.pt`` when it is a pretraining exp dir."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No SSL checkpoint at {path}")
    if path.is_dir():
        found = list_checkpoints(path, "checkpoint")
        if found:
            return found[-1][1]
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path}: neither a Hugging Face model directory (config.json) nor a pretraining "
                f"exp dir (checkpoint-N.pt); run the pretraining stage or pass a checkpoint file"
            )
    return path


def checkpoint_digest(path: Path) -> str:
    """sha256 of a checkpoint file (of every file, for a directory), first 16 hex digits."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def conv_layers(model: torch.nn.Module) -> tuple[tuple[int, int, int], ...]:
    """The encoder's conv front end as ``(channels, kernel, stride)`` per layer (no padding)."""
    cfg = model.config
    cfg = getattr(cfg, "wav2vec", cfg)  # vq-wav2vec nests its wav2vec config
    layers = getattr(cfg, "conv_layers", None) or getattr(cfg, "encoder_layers")
    return tuple((int(c), int(k), int(s)) for c, k, s in layers)


def conv_geometry(model: torch.nn.Module) -> tuple[int, int]:
    """(hop, receptive field) in samples of the encoder's conv front end (no padding)."""
    return _geometry(conv_layers(model))


def _geometry(layers: Sequence[tuple[int, int, int]]) -> tuple[int, int]:
    hop, field = 1, 1
    for _, kernel, stride in layers:
        field += (kernel - 1) * hop
        hop *= stride
    return hop, field


@dataclass(frozen=True)
class Windows:
    """How a long recording is cut into encoder windows.

    Attributes:
        layers: the conv front end (:func:`conv_layers`).
        max_samples: longest audio encoded in one piece (samples at 16 kHz); 0 never splits.
        context_frames: frames of context on each side of a window's kept frames.
    """

    layers: tuple[tuple[int, int, int], ...]
    max_samples: int
    context_frames: int

    @classmethod
    def of(cls, model: torch.nn.Module, max_segment_seconds: float, context_seconds: float) -> "Windows":
        hop, field = conv_geometry(model)
        w = cls(conv_layers(model), int(max_segment_seconds * SAMPLE_RATE),
                math.ceil(context_seconds * SAMPLE_RATE / hop))
        if w.max_samples and w.core_frames < 1:
            raise ValueError(
                f"max segment {max_segment_seconds} s leaves no frame between its {context_seconds} s "
                f"contexts; give a segment longer than twice the context plus {field / SAMPLE_RATE:g} s"
            )
        return w

    @property
    def hop(self) -> int:
        return _geometry(self.layers)[0]

    @property
    def field(self) -> int:
        return _geometry(self.layers)[1]

    @property
    def core_frames(self) -> int:
        """Frames a window keeps: the rest of ``max_samples`` after both contexts."""
        return (self.max_samples - self.field) // self.hop + 1 - 2 * self.context_frames

    def num_frames(self, samples: int) -> int:
        """Encoder frames of ``samples`` of audio."""
        for _, kernel, stride in self.layers:
            samples = max((samples - kernel) // stride + 1, 0)
        return samples

    def split(self, samples: int) -> list[tuple[int, int, int, Optional[int]]]:
        """Windows of audio of ``samples`` samples, as ``(start, end, keep_from, keep_to)``.

        ``audio[start:end]`` is encoded; its frames ``[keep_from:keep_to]`` (``keep_to`` None: to
        the end) are the recording's frames ``start / hop + keep_from ...``. Windows start on the
        hop grid, so a window's frame ``j`` sees exactly the samples the unsplit frame
        ``start / hop + j`` sees, and the kept frames concatenate to :meth:`num_frames`.
        """
        if not self.max_samples or samples <= self.max_samples:
            return [(0, samples, 0, None)]
        total, core, ctx = self.num_frames(samples), self.core_frames, self.context_frames
        out = []
        for first in range(0, total, core):
            lo = max(first - ctx, 0)
            if first + core >= total:
                out.append((lo * self.hop, samples, first - lo, None))
            else:
                end = (first + core + ctx - 1) * self.hop + self.field
                out.append((lo * self.hop, min(end, samples), first - lo, first - lo + core))
        return out


@dataclass(frozen=True)
class BatchLimits:
    """How much goes into one encoder forward.

    Attributes:
        seconds: padded audio (items × the longest) per batch; a longer cut or window goes alone,
            and 0 encodes one at a time.
        cuts: most cuts (or windows) per batch; 0: no limit.
        padding: largest fraction of a batch's padded audio that may be padding. A CPU encodes a
            padded batch no faster per frame than its cuts alone, so padding is what batching
            costs there; sorted chunks of many cuts keep batches full under a small bound.
    """

    seconds: float = 100.0
    cuts: int = 0
    padding: float = 0.05


def plan_batches(lengths: Sequence[float], limits: BatchLimits) -> list[list[int]]:
    """Indices into ``lengths``, longest first, grouped into batches within ``limits``: padded
    size (items × the longest) at most ``limits.seconds`` (an item longer than that is a batch
    alone), at most ``limits.cuts`` items, padding at most ``limits.padding`` of the batch."""
    batches: list[list[int]] = []
    total = 0.0  # of the last batch
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        last = batches[-1] if batches else None
        if last:
            padded = (len(last) + 1) * lengths[last[0]]
            if (padded <= limits.seconds and (limits.cuts <= 0 or len(last) < limits.cuts)
                    and padded - total - lengths[i] <= limits.padding * padded):
                last.append(i)
                total += lengths[i]
                continue
        batches.append([i])
        total = lengths[i]
    return batches


ONE_AT_A_TIME = BatchLimits(seconds=0.0)


@dataclass(frozen=True)
class SslFeatureSpec:
    """What a stored SSL feature set is: written next to it and checked on every rerun."""

    checkpoint: str
    digest: str
    kind: str
    layer: int
    bf16: bool
    storage: str
    feature_dim: int
    frame_shift: float
    max_segment_seconds: float
    context_seconds: float


class SslFeatureExtractor:
    """One layer of a pretrained encoder: ``extract(audio [T]) -> [frames, dim]``, and the same for
    padded batches of cuts (:meth:`extract_cuts`).

    Args:
        checkpoint: anything :func:`resolve_checkpoint` accepts.
        layer: 1-based block index; ``num_layers`` of the model at most.
        bf16: run the encoder under ``torch.autocast(bfloat16)``.
        device: ``cpu``, ``cuda`` or ``cuda:N``; audio goes there, features come back to the CPU.
        max_segment_seconds: audio longer than this is encoded in windows (:class:`Windows`);
            0 never splits.
        context_seconds: context on each side of a window, dropped when joining.
    """

    def __init__(
        self, checkpoint: str | Path, layer: int, bf16: bool = False, device: str = "cpu",
        max_segment_seconds: float = MAX_SEGMENT_SECONDS, context_seconds: float = CONTEXT_SECONDS,
    ) -> None:
        self.checkpoint = resolve_checkpoint(checkpoint)
        self.model, self.config = load_pretrained(self.checkpoint)
        if not hasattr(self.model, "extract_features"):
            raise ValueError(f"{self.checkpoint}: {type(self.model).__name__} has no extract_features")
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.bf16 = bf16
        self.kind = str(getattr(self.config, "kind", type(self.model).__name__))
        hop, field = conv_geometry(self.model)
        self.frame_shift = hop / SAMPLE_RATE
        # lhotse counts frames centred on the hop; an unpadded conv stack has about field/hop fewer.
        self.max_frame_gap = math.ceil(field / hop) + 1
        self.max_segment_seconds = float(max_segment_seconds)
        self.context_seconds = float(context_seconds)
        self.windows = Windows.of(self.model, max_segment_seconds, context_seconds)
        with torch.inference_mode():
            probe, _ = self.model.extract_features(torch.zeros(1, SAMPLE_RATE, device=self.device))
        self.num_layers = len(probe)
        if not 1 <= layer <= self.num_layers:
            raise ValueError(
                f"{self.checkpoint}: layer {layer} does not exist; this {self.kind} encoder has "
                f"layers 1..{self.num_layers}"
            )
        self.layer = layer
        self.feature_dim = int(probe[layer - 1].shape[-1])

    @functools.cached_property
    def digest(self) -> str:
        """:func:`checkpoint_digest` of the checkpoint, hashed once per extractor."""
        return checkpoint_digest(self.checkpoint)

    def spec(self, storage: str) -> SslFeatureSpec:
        return SslFeatureSpec(
            checkpoint=str(self.checkpoint.resolve()), digest=self.digest,
            kind=self.kind, layer=self.layer, bf16=self.bf16, storage=storage,
            feature_dim=self.feature_dim, frame_shift=self.frame_shift,
            max_segment_seconds=self.max_segment_seconds, context_seconds=self.context_seconds,
        )

    @torch.inference_mode()
    def encode(self, audios: Sequence[torch.Tensor], autocast: Optional[bool] = None) -> list[np.ndarray]:
        """One encoder forward of a padded batch.

        Args:
            audios: each ``[samples]`` float at 16 kHz (CPU).
            autocast: bf16 autocast; the extractor's ``bf16`` when None.
        Returns:
            each utterance's layer ``[frames_i, feature_dim]`` float32, its valid frames only.
        """
        lengths = torch.tensor([a.shape[0] for a in audios])
        batch = torch.zeros(len(audios), int(lengths.max()))
        for i, a in enumerate(audios):
            batch[i, : a.shape[0]] = a
        # One utterance takes the unpadded path: that is the one-at-a-time reference.
        lens = lengths.to(self.device) if len(audios) > 1 else None
        enabled = self.bf16 if autocast is None else autocast
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled):
            layers, frames = self.model.extract_features(batch.to(self.device), lens, num_layers=self.layer)
        out = layers[self.layer - 1].float().cpu()
        frames = [out.shape[1]] * len(audios) if frames is None else frames.cpu().tolist()
        return [out[i, :n].numpy() for i, n in enumerate(frames)]

    @functools.cached_property
    def pads_exactly(self) -> bool:
        """Whether a padded batch gives an utterance its own features: checked once, in fp32, on
        random audio (half a second padded to 1.1 s), before the first batch is encoded."""
        g = torch.Generator().manual_seed(0)
        short, long = (0.1 * torch.randn(n, generator=g) for n in (SAMPLE_RATE // 2, SAMPLE_RATE * 11 // 10))
        alone = self.encode([short], autocast=False)[0]
        padded = self.encode([short, long], autocast=False)[0]
        err = float(np.abs(alone - padded).max() / max(np.abs(alone).max(), 1e-6)) if alone.shape == padded.shape \
            else math.inf
        if err > _PROBE_TOLERANCE:
            log.warning("%s (%s): padding changes an utterance's features (relative error %.2g); "
                        "encoding one cut at a time", self.checkpoint, self.kind, err)
            return False
        return True

    def extract_many(
        self, audios: Sequence[np.ndarray | torch.Tensor], limits: BatchLimits = BatchLimits()
    ) -> list[np.ndarray | Exception]:
        """Encoder frames of each utterance, long ones in windows, all in padded batches.

        Args:
            audios: each ``[samples]`` float at 16 kHz.
            limits: batch size (one at a time where :attr:`pads_exactly` is False).
        Returns:
            per utterance ``[frames, feature_dim]`` float32, or the exception its batch raised
            when encoded alone (too short for the receptive field, out of memory, ...).
        """
        wavs = [torch.as_tensor(a, dtype=torch.float32) for a in audios]
        results: list[np.ndarray | Exception | None] = [None] * len(wavs)
        segments = []  # (utterance, start, end, keep_from, keep_to)
        for i, w in enumerate(wavs):
            if w.ndim != 1:
                results[i] = ValueError(f"Expected mono audio [samples], found shape {list(w.shape)}")
                continue
            if w.shape[0] < self.windows.field:  # alone, not as the failure of a whole batch
                results[i] = ValueError(f"Audio of {w.shape[0]} samples is shorter than the receptive field "
                                        f"({self.windows.field} samples)")
                continue
            segments.extend((i, *window) for window in self.windows.split(w.shape[0]))
        if len(segments) < 2 or not self.pads_exactly:
            limits = ONE_AT_A_TIME
        batches = plan_batches([(e - s) / SAMPLE_RATE for _, s, e, _, _ in segments], limits)
        pieces: dict[int, np.ndarray] = {}
        for batch in batches:
            parts = [wavs[segments[k][0]][segments[k][1]: segments[k][2]] for k in batch]
            try:
                pieces.update(zip(batch, self.encode(parts)))
            except Exception as e:  # noqa: BLE001 - retried alone, so the error names its utterance
                if len(batch) == 1:
                    results[segments[batch[0]][0]] = e
                    continue
                for k, part in zip(batch, parts):
                    try:
                        pieces[k] = self.encode([part])[0]
                    except Exception as e1:  # noqa: BLE001
                        results[segments[k][0]] = e1
        kept: dict[int, list[np.ndarray]] = {}
        for k, (i, _, _, keep_from, keep_to) in enumerate(segments):
            if k in pieces:
                kept.setdefault(i, []).append(pieces[k][keep_from:keep_to])
        for i, frames in kept.items():
            if results[i] is None:  # else one of its windows failed
                results[i] = frames[0] if len(frames) == 1 else np.concatenate(frames)
        return results  # type: ignore[return-value]

    def extract(self, audio: np.ndarray | torch.Tensor) -> np.ndarray:
        """audio: ``[samples]`` float at 16 kHz → ``[frames, feature_dim]`` float32."""
        out = self.extract_many([audio])[0]
        if isinstance(out, Exception):
            raise out
        return out

    def extract_cuts(self, cuts: Sequence, limits: BatchLimits = BatchLimits()) -> list[np.ndarray | Exception]:
        """Features of lhotse cuts, each with exactly ``compute_num_frames(cut.duration)`` rows,
        or the exception that stopped it (audio that fails to load, an encoder error)."""
        results: list[np.ndarray | Exception | None] = [None] * len(cuts)
        audios, index = [], []
        for i, cut in enumerate(cuts):
            try:
                audios.append(load_mono(cut))
                index.append(i)
            except Exception as e:  # noqa: BLE001 - one bad file must not stop the batch
                results[i] = e
        for i, feats in zip(index, self.extract_many(audios, limits)):
            try:
                results[i] = feats if isinstance(feats, Exception) else self.fit_frames(feats, cuts[i].duration)
            except ValueError as e:
                results[i] = e
        return results  # type: ignore[return-value]

    def extract_cut(self, cut) -> np.ndarray:
        """Features of a lhotse cut with exactly ``compute_num_frames(cut.duration)`` rows."""
        out = self.extract_cuts([cut])[0]
        if isinstance(out, Exception):
            raise out
        return out

    def fit_frames(self, feats: np.ndarray, duration: float) -> np.ndarray:
        """``feats`` ``[frames, dim]`` with lhotse's frame count for ``duration`` seconds: the
        last frame repeated (or the excess cut) when the encoder's count is a few frames off."""
        want = compute_num_frames(duration, self.frame_shift, SAMPLE_RATE)
        if abs(feats.shape[0] - want) > self.max_frame_gap:
            raise ValueError(f"encoder gave {feats.shape[0]} frames for {duration:.3f} s, expected {want}")
        if feats.shape[0] < want:
            feats = np.concatenate([feats, np.repeat(feats[-1:], want - feats.shape[0], axis=0)], axis=0)
        return np.ascontiguousarray(feats[:want])


def load_mono(cut) -> np.ndarray:
    """A cut's audio ``[samples]`` at 16 kHz (resampled when needed)."""
    if cut.sampling_rate != SAMPLE_RATE:
        cut = cut.resample(SAMPLE_RATE)
    audio = cut.load_audio()
    if audio.ndim == 2:
        if audio.shape[0] != 1:
            raise ValueError(f"expected one channel, found {audio.shape[0]}")
        audio = audio[0]
    return audio


def _writer(storage: str, path: Path):
    if storage == "numpy":
        return NumpyFilesWriter(path)
    if storage == "lilcom":
        return LilcomChunkyWriter(path)
    raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")


def compute_ssl_features(
    cuts: CutSet, extractor: SslFeatureExtractor, storage_path: str | Path, storage: str = "numpy",
    progress: bool = True, limits: BatchLimits = BatchLimits(),
) -> tuple[CutSet, list[FailedCut]]:
    """Extract and store features for ``cuts``; a cut whose audio fails is reported and dropped.

    The cuts are loaded and encoded a batch at a time (:func:`plan_batches` over their durations),
    so at most one batch of audio, or one long recording, is in memory.

    ``storage_path``: the directory of ``.npy`` files (numpy) or the ``.lca`` archive (lilcom).
    Returns:
        the cuts that succeeded with their new features attached (input order), and the failures.
    """
    storage_path = Path(storage_path)
    storage_path.parent.mkdir(parents=True, exist_ok=True)
    items = list(cuts)
    if len(items) < 2 or not extractor.pads_exactly:
        limits = ONE_AT_A_TIME
    groups = plan_batches([c.duration for c in items], limits)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc=f"SSL L{extractor.layer} -> {storage_path.name}", leave=False)
    done: dict[int, object] = {}
    failed: dict[int, FailedCut] = {}
    with _writer(storage, storage_path) as writer:
        for group in groups:
            for i, feats in zip(group, extractor.extract_cuts([items[i] for i in group], limits)):
                cut = items[i]
                if isinstance(feats, Exception):
                    failed[i] = FailedCut.of(cut, feats)
                    continue
                info = Features(
                    type=FEATURE_TYPE, num_frames=feats.shape[0], num_features=feats.shape[1],
                    frame_shift=extractor.frame_shift, sampling_rate=SAMPLE_RATE,
                    start=cut.start, duration=cut.duration, storage_type=writer.name,
                    storage_path=str(writer.storage_path), storage_key=writer.write(cut.id, feats),
                    channels=0,
                )
                done[i] = fastcopy(cut, features=info)
            if bar is not None:
                bar.update(len(group))
    if bar is not None:
        bar.close()
    for i in sorted(failed):
        f = failed[i]
        log.warning("Dropping cut %s: %s: %s", f.cut_id, f.source, f.error)
    return CutSet.from_cuts(done[i] for i in sorted(done)), [failed[i] for i in sorted(failed)]


def check_spec(out_dir: Path, spec: SslFeatureSpec) -> None:
    """Record ``spec`` in ``out_dir``, or raise if the features there came from something else."""
    path = out_dir / SPEC_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        if old != asdict(spec):
            diff = {k: (old.get(k), v) for k, v in asdict(spec).items() if old.get(k) != v}
            raise RuntimeError(
                f"{out_dir} holds SSL features made differently (was, now): {diff}; remove it "
                f"or give these features another directory"
            )
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(asdict(spec), indent=2) + "\n")


def part_paths(in_cuts: str | Path, out_dir: str | Path) -> tuple[Path, Path]:
    """(``out_dir/<same name>``, its storage ``out_dir/<prefix>_feats_<part>``)."""
    out = Path(out_dir) / Path(in_cuts).name
    return out, out.parent / manifest_stem(out).replace("_cuts_", "_feats_")


def compute_ssl_features_for_part(
    in_cuts: str | Path, out_dir: str | Path, extractor: SslFeatureExtractor, storage: str = "numpy",
    progress: bool = True, chunk_size: int = CHUNK_CUTS, limits: BatchLimits = BatchLimits(),
    shard: Shard = Shard(), worker: int = 0, num_workers: int = 1,
) -> Optional[Path]:
    """``in_cuts`` (e.g. ``data/fbank/librispeech_cuts_test-clean.jsonl.gz``: the recordings and
    supervisions are reused, the fbank dropped) → ``out_dir/<same name>`` with SSL features in
    ``out_dir/<prefix>_feats_<part>/``.

    The cuts are done in chunks of ``chunk_size`` (:class:`~w2v.features.parts.ChunkedPart`):
    ``shard``'s chunks, of those every ``num_workers``-th from ``worker``; each finished chunk's
    manifest is written atomically, so a killed run resumes at its first unfinished chunk. Unless
    it is one worker of several (its parent merges), the call then writes the part's manifest if
    every shard is done.

    Returns:
        the part's manifest once written; None when it existed already (skipped), or when other
        shards or workers still have chunks to do.
    """
    in_cuts = Path(in_cuts)
    out, storage_dir = part_paths(in_cuts, out_dir)
    check_spec(Path(out_dir), extractor.spec(storage))
    if out.is_file():
        log.info("%s exists; skipping", out)
        return None
    if not in_cuts.is_file():
        raise FileNotFoundError(f"Missing cuts {in_cuts} (run the fbank stage first)")
    items = [c.drop_features() for c in CutSet.from_file(in_cuts)]
    part = ChunkedPart(out)
    plan, todo = part.begin([c.id for c in items], chunk_size, shard)
    mine = [i for i in range(plan.num_chunks) if shard.owns(i)][worker::num_workers]
    todo = sorted(set(todo) & set(mine))
    log.info("%s: SSL layer %d of %s (%s, bf16 %s, %s) for %d cuts; shard %s, worker %d/%d: %d of its "
             "%d chunks to do", in_cuts.name, extractor.layer, extractor.checkpoint, extractor.kind,
             extractor.bf16, extractor.device, len(items), shard, worker, num_workers, len(todo), len(mine))
    failed = 0
    for i in todo:
        start, end = plan.bounds(i)
        storage_path = storage_dir if storage == "numpy" else storage_dir / f"feats-{i:05d}"
        got, bad = compute_ssl_features(CutSet.from_cuts(items[start:end]), extractor, storage_path, storage,
                                        progress, limits)
        part.write(i, got)
        failed += len(bad)
    if failed:
        log.warning("%s: %d cuts dropped because their audio failed", in_cuts.name, failed)
    if num_workers > 1:
        return None
    return part.merge(required=False)


def merge_ssl_part(in_cuts: str | Path, out_dir: str | Path) -> Path:
    """Write ``out_dir/<name of in_cuts>`` from the chunks every shard wrote.

    Raises:
        RuntimeError: naming the shards whose chunks are missing.
    """
    out, _ = part_paths(in_cuts, out_dir)
    merged = ChunkedPart(out).merge(required=True)
    assert merged is not None
    return merged


@dataclass(frozen=True)
class ExtractorOptions:
    """What a worker process needs to build its own :class:`SslFeatureExtractor`."""

    checkpoint: str
    layer: int
    bf16: bool = False
    device: str = "cpu"
    max_segment_seconds: float = MAX_SEGMENT_SECONDS
    context_seconds: float = CONTEXT_SECONDS

    def build(self, device: Optional[str] = None) -> SslFeatureExtractor:
        return SslFeatureExtractor(self.checkpoint, self.layer, self.bf16, device or self.device,
                                   self.max_segment_seconds, self.context_seconds)


def worker_device(device: str, worker: int) -> str:
    """Worker ``worker``'s device: ``cuda`` spreads workers over the visible GPUs (under torchrun,
    the shard's ``LOCAL_RANK`` picks one); ``cpu`` and ``cuda:N`` stay as given."""
    if device != "cuda":
        return device
    if "LOCAL_RANK" in os.environ:
        return f"cuda:{(int(os.environ['LOCAL_RANK']) + worker) % torch.cuda.device_count()}"
    return f"cuda:{worker % torch.cuda.device_count()}"


def _worker(options: ExtractorOptions, in_cuts: Sequence[str], out_dir: str, storage: str, limits: BatchLimits,
            shard: Shard, worker: int, num_workers: int, chunk_size: int, threads: int) -> None:
    """One worker process: its own extractor, its share of ``shard``'s chunks of every part."""
    from w2v.utils import setup_logging

    setup_logging()
    torch.set_num_threads(threads)
    extractor = options.build(worker_device(options.device, worker))
    for path in in_cuts:
        compute_ssl_features_for_part(path, out_dir, extractor, storage, progress=False, chunk_size=chunk_size,
                                      limits=limits, shard=shard, worker=worker, num_workers=num_workers)


def compute_ssl_features_for_parts(
    in_cuts: Sequence[str | Path], out_dir: str | Path, options: ExtractorOptions, storage: str = "numpy",
    limits: BatchLimits = BatchLimits(), shard: Shard = Shard(), num_jobs: int = 1, progress: bool = True,
    chunk_size: int = CHUNK_CUTS,
) -> list[Optional[Path]]:
    """Every part of ``in_cuts`` (:func:`compute_ssl_features_for_part`), ``shard``'s chunks of
    them in ``num_jobs`` processes: on CPU each with its share of the cores, on CUDA one per GPU
    in turn (:func:`worker_device`). The parent merges each part whose shards are all done.

    Returns:
        per part, its manifest once written, else None (skipped, or other shards still running).
    """
    if num_jobs <= 1:
        extractor = options.build(worker_device(options.device, 0))
        return [compute_ssl_features_for_part(p, out_dir, extractor, storage, progress, chunk_size, limits, shard)
                for p in in_cuts]
    existed = [part_paths(p, out_dir)[0].is_file() for p in in_cuts]
    cpus = len(os.sched_getaffinity(0))
    threads = max(1, cpus // num_jobs) if options.device == "cpu" else 1
    args = [str(p) for p in in_cuts]
    # spawn: CUDA cannot be initialised again in a forked child
    with ProcessPoolExecutor(num_jobs, mp_context=torch.multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(_worker, options, args, str(out_dir), storage, limits, shard, w, num_jobs,
                            chunk_size, threads) for w in range(num_jobs)]
        for job in jobs:
            job.result()
    return [None if skipped else ChunkedPart(part_paths(p, out_dir)[0]).merge(required=False)
            for p, skipped in zip(in_cuts, existed)]
