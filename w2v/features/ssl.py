"""Self-supervised representations as ASR features: one layer of a wav2vec-family encoder,
stored in lhotse feature storage exactly like fbank, so training and decoding read either.

The encoder is anything :func:`w2v.models.load_pretrained` reads (a fairseq ``.pt``, a Hugging
Face directory, a checkpoint of this project, or a pretraining exp dir: its newest
``checkpoint-N.pt``). Layer ``L`` (1-based) is the output of the L-th Transformer block (context
layer for wav2vec 1.0 / vq-wav2vec), torchaudio's ``extract_features(...)[L - 1]``.

Each cut is encoded alone (no padding, so a batch cannot change a cut's features), in fp32 or under
bf16 autocast (``bf16=True``: 0.65× the fp32 time for BASE layer 6 on this AVX512-BF16 CPU,
mean error 1% of the features' std; stored in fp32 either way). Frames are 20 ms for the wav2vec 2.0 family (10 ms for wav2vec 1.0); the
stored matrix has exactly lhotse's ``compute_num_frames`` rows (an unpadded conv front end gives
up to receptive field / hop fewer: 1 for wav2vec 2.0, 3-4 for wav2vec 1.0; the last frame is
repeated).

Storage: ``numpy`` (float32 ``.npy`` files, exact; a 768-dim BASE layer takes 154 kB per second of
audio, 530 GB for LibriSpeech's 960 h) or ``lilcom`` (lossy compression, several times smaller;
``bench/bench_ssl_features.py`` prints its error next to bf16's).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from lhotse import CutSet, LilcomChunkyWriter, NumpyFilesWriter
from lhotse.features.base import Features
from lhotse.utils import compute_num_frames, fastcopy

from w2v.features.fbank import FailedCut, save_cuts
from w2v.models import load_pretrained
from w2v.runtime.checkpoints import list_checkpoints
from w2v.utils import atomic_write_text

log = logging.getLogger(__name__)

SAMPLING_RATE = 16000
FEATURE_TYPE = "w2v-ssl"
STORAGES = ("numpy", "lilcom")
SPEC_FILE = "ssl_features.json"
# Cuts per resumable chunk of a part (a killed extraction redoes at most one chunk).
CHUNK_CUTS = 500


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


def conv_geometry(model: torch.nn.Module) -> tuple[int, int]:
    """(hop, receptive field) in samples of the encoder's conv front end (no padding)."""
    cfg = model.config
    cfg = getattr(cfg, "wav2vec", cfg)  # vq-wav2vec nests its wav2vec config
    layers = getattr(cfg, "conv_layers", None) or getattr(cfg, "encoder_layers")
    hop, field = 1, 1
    for _, kernel, stride in layers:
        field += (int(kernel) - 1) * hop
        hop *= int(stride)
    return hop, field


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


class SslFeatureExtractor:
    """One layer of a pretrained encoder, per utterance: ``extract(audio [T]) -> [frames, dim]``.

    Args:
        checkpoint: anything :func:`resolve_checkpoint` accepts.
        layer: 1-based block index; ``num_layers`` of the model at most.
        bf16: run the encoder under ``torch.autocast(bfloat16)``.
        device: ``cpu`` or ``cuda``.
    """

    def __init__(self, checkpoint: str | Path, layer: int, bf16: bool = False, device: str = "cpu") -> None:
        self.checkpoint = resolve_checkpoint(checkpoint)
        self.model, self.config = load_pretrained(self.checkpoint)
        if not hasattr(self.model, "extract_features"):
            raise ValueError(f"{self.checkpoint}: {type(self.model).__name__} has no extract_features")
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.bf16 = bf16
        self.kind = str(getattr(self.config, "kind", type(self.model).__name__))
        hop, field = conv_geometry(self.model)
        self.frame_shift = hop / SAMPLING_RATE
        # lhotse counts frames centred on the hop; an unpadded conv stack has about field/hop fewer.
        self.max_frame_gap = math.ceil(field / hop) + 1
        probe, _ = self.model.extract_features(torch.zeros(1, SAMPLING_RATE, device=self.device))
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
        )

    @torch.inference_mode()
    def extract(self, audio: np.ndarray | torch.Tensor) -> np.ndarray:
        """audio: ``[samples]`` float at 16 kHz → ``[frames, feature_dim]`` float32."""
        wav = torch.as_tensor(audio, dtype=torch.float32, device=self.device)
        if wav.ndim != 1:
            raise ValueError(f"Expected mono audio [samples], found shape {list(wav.shape)}")
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            layers, _ = self.model.extract_features(wav[None], num_layers=self.layer)
        return layers[self.layer - 1][0].float().cpu().numpy()

    def extract_cut(self, cut) -> np.ndarray:
        """Features of a lhotse cut with exactly ``compute_num_frames(cut.duration)`` rows."""
        if cut.sampling_rate != SAMPLING_RATE:
            cut = cut.resample(SAMPLING_RATE)
        audio = cut.load_audio()
        if audio.ndim == 2:
            if audio.shape[0] != 1:
                raise ValueError(f"expected one channel, found {audio.shape[0]}")
            audio = audio[0]
        feats = self.extract(audio)
        want = compute_num_frames(cut.duration, self.frame_shift, SAMPLING_RATE)
        if abs(feats.shape[0] - want) > self.max_frame_gap:
            raise ValueError(f"encoder gave {feats.shape[0]} frames for {cut.duration:.3f} s, expected {want}")
        if feats.shape[0] < want:
            feats = np.concatenate([feats, np.repeat(feats[-1:], want - feats.shape[0], axis=0)], axis=0)
        return np.ascontiguousarray(feats[:want])


def _writer(storage: str, path: Path):
    if storage == "numpy":
        return NumpyFilesWriter(path)
    if storage == "lilcom":
        return LilcomChunkyWriter(path)
    raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")


def compute_ssl_features(
    cuts: CutSet, extractor: SslFeatureExtractor, storage_path: str | Path, storage: str = "numpy",
    progress: bool = True,
) -> tuple[CutSet, list[FailedCut]]:
    """Extract and store features for ``cuts``; a cut whose audio fails is reported and dropped.

    ``storage_path``: the directory of ``.npy`` files (numpy) or the ``.lca`` archive (lilcom).
    Returns:
        the cuts that succeeded with their new features attached (input order), and the failures.
    """
    storage_path = Path(storage_path)
    storage_path.parent.mkdir(parents=True, exist_ok=True)
    done, failed = [], []
    items = list(cuts)
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc=f"SSL L{extractor.layer} -> {storage_path.name}", leave=False)
    with _writer(storage, storage_path) as writer:
        for cut in items:
            try:
                feats = extractor.extract_cut(cut)
            except Exception as e:  # one bad file must not stop the part
                failed.append(FailedCut.of(cut, e))
                continue
            info = Features(
                type=FEATURE_TYPE, num_frames=feats.shape[0], num_features=feats.shape[1],
                frame_shift=extractor.frame_shift, sampling_rate=SAMPLING_RATE,
                start=cut.start, duration=cut.duration, storage_type=writer.name,
                storage_path=str(writer.storage_path), storage_key=writer.write(cut.id, feats),
                channels=0,
            )
            done.append(fastcopy(cut, features=info))
    for f in failed:
        log.warning("Dropping cut %s: %s: %s", f.cut_id, f.source, f.error)
    return CutSet.from_cuts(done), failed


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


def compute_ssl_features_for_part(
    in_cuts: str | Path, out_dir: str | Path, extractor: SslFeatureExtractor, storage: str = "numpy",
    progress: bool = True, chunk_size: int = CHUNK_CUTS,
) -> Optional[Path]:
    """``in_cuts`` (e.g. ``data/fbank/librispeech_cuts_test-clean.jsonl.gz``: the recordings and
    supervisions are reused, the fbank dropped) → ``out_dir/<same name>`` with SSL features in
    ``out_dir/<prefix>_feats_<part>/``.

    Skips a part whose cuts manifest exists (returns None). The cuts are done in chunks of
    ``chunk_size``, each finished chunk's manifest written atomically in a hidden directory, so a
    killed run resumes at its first unfinished chunk; the part's manifest is written (atomically)
    from the chunks at the end and the chunk directory removed.
    """
    in_cuts, out_dir = Path(in_cuts), Path(out_dir)
    out = out_dir / in_cuts.name
    check_spec(out_dir, extractor.spec(storage))
    if out.is_file():
        log.info("%s exists; skipping", out)
        return None
    if not in_cuts.is_file():
        raise FileNotFoundError(f"Missing cuts {in_cuts} (run the fbank stage first)")
    items = [c.drop_features() for c in CutSet.from_file(in_cuts)]
    stem = in_cuts.name[: -len(".jsonl.gz")] if in_cuts.name.endswith(".jsonl.gz") else in_cuts.stem
    storage_dir = out_dir / stem.replace("_cuts_", "_feats_")
    chunk_dir = out_dir / f".{stem}.chunks"
    chunks = [items[i: i + chunk_size] for i in range(0, len(items), chunk_size)]
    log.info("%s: SSL layer %d of %s (%s, bf16 %s) for %d cuts in %d chunks", in_cuts.name,
             extractor.layer, extractor.checkpoint, extractor.kind, extractor.bf16, len(items),
             len(chunks))
    done, failed, resumed = [], 0, 0
    for i, chunk in enumerate(chunks):
        chunk_path = chunk_dir / f"chunk-{i:05d}.jsonl.gz"
        if chunk_path.is_file():
            done.extend(CutSet.from_file(chunk_path))
            resumed += 1
            continue
        storage_path = storage_dir if storage == "numpy" else storage_dir / f"feats-{i:05d}"
        got, bad = compute_ssl_features(CutSet.from_cuts(chunk), extractor, storage_path, storage, progress)
        save_cuts(got, chunk_path)
        done.extend(got)
        failed += len(bad)
    if resumed:
        log.info("%s: %d of %d chunks were done by an earlier run", in_cuts.name, resumed, len(chunks))
    if failed:
        log.warning("%s: %d cuts dropped because their audio failed", in_cuts.name, failed)
    if not done:
        raise RuntimeError(f"{in_cuts}: no cut could be processed")
    save_cuts(CutSet.from_cuts(done), out)
    shutil.rmtree(chunk_dir)
    log.info("wrote %s (%d cuts, %d-dim at %g ms)", out, len(done), extractor.feature_dim,
             extractor.frame_shift * 1000)
    return out
