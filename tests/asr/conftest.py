"""Synthetic cuts with precomputed features and a char lang dir, so ASR tests need no corpus.

Each utterance spells a word over a 4-letter alphabet; each letter is ~8-12 frames of a
letter-specific pattern plus noise, so a tiny model can learn it in a few steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lhotse import CutSet, Features, MonoCut, NumpyFilesWriter, SupervisionSegment

ALPHABET = "ABCD"
FEATURE_DIM = 80


def write_char_lang(lang_dir: Path) -> Path:
    lang_dir.mkdir(parents=True, exist_ok=True)
    lines = ["<blk> 0", "<unk> 1"] + [f"{c} {i + 2}" for i, c in enumerate(ALPHABET)] + ["#0 6"]
    (lang_dir / "tokens.txt").write_text("\n".join(lines) + "\n")
    return lang_dir


def make_cuts(storage: Path, n: int, seed: int = 0, prefix: str = "utt", frame_shift: float = 0.01,
              feature_dim: int = FEATURE_DIM) -> CutSet:
    """``frame_shift`` 0.02 and another ``feature_dim`` stand in for SSL features."""
    FEATURE_DIM = feature_dim
    # Letter patterns are shared by every set; ``seed`` only varies the words and noise.
    patterns = np.random.default_rng(1234).standard_normal((len(ALPHABET), FEATURE_DIM))
    patterns = patterns.astype(np.float32) * 2
    rng = np.random.default_rng(seed)
    cuts = []
    storage.mkdir(parents=True, exist_ok=True)
    with NumpyFilesWriter(storage) as writer:
        for i in range(n):
            word = "".join(rng.choice(list(ALPHABET), size=rng.integers(2, 6)))
            blocks = [np.zeros((rng.integers(3, 8), FEATURE_DIM), np.float32)]
            for ch in word:
                blocks.append(np.repeat(patterns[ALPHABET.index(ch)][None], rng.integers(8, 13), 0))
                blocks.append(np.zeros((rng.integers(2, 5), FEATURE_DIM), np.float32))
            feats = np.concatenate(blocks) + 0.3 * rng.standard_normal(
                (sum(len(b) for b in blocks), FEATURE_DIM)
            ).astype(np.float32)
            cid = f"{prefix}{i:03d}"
            key = writer.write(cid, feats)
            dur = round(feats.shape[0] * frame_shift, 2)
            features = Features(
                type="fbank", num_frames=feats.shape[0], num_features=FEATURE_DIM,
                frame_shift=frame_shift, sampling_rate=16000, start=0.0, duration=dur,
                storage_type=writer.name, storage_path=str(storage), storage_key=key,
            )
            sup = SupervisionSegment(id=cid, recording_id=cid, start=0.0, duration=dur,
                                     text=" ".join(word))
            cuts.append(MonoCut(id=cid, start=0.0, duration=dur, channel=0,
                                features=features, supervisions=[sup]))
    return CutSet.from_cuts(cuts)


@pytest.fixture
def toy_data(tmp_path):
    """(lang_dir, train_cuts_path, dev_cuts_path) on disk."""
    lang = write_char_lang(tmp_path / "lang_char")
    train = make_cuts(tmp_path / "feats_train", 48, seed=0, prefix="tr")
    dev = make_cuts(tmp_path / "feats_dev", 8, seed=1, prefix="dv")
    train_path, dev_path = tmp_path / "cuts_train.jsonl.gz", tmp_path / "cuts_dev.jsonl.gz"
    train.to_file(train_path)
    dev.to_file(dev_path)
    return lang, train_path, dev_path


@pytest.fixture
def toy_data_20ms(tmp_path):
    """Like ``toy_data`` but 48-dim features at 20 ms frames, as SSL features are."""
    lang = write_char_lang(tmp_path / "lang_char_20ms")
    paths = []
    for name, n, seed in (("train", 48, 0), ("dev", 8, 1)):
        cuts = make_cuts(tmp_path / f"feats20_{name}", n, seed=seed, prefix=name,
                         frame_shift=0.02, feature_dim=48)
        paths.append(tmp_path / f"cuts20_{name}.jsonl.gz")
        cuts.to_file(paths[-1])
    return lang, paths[0], paths[1]
