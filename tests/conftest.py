"""Shared fixtures: tiny synthetic corpora, made once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tests share two cores with whatever else runs; one thread keeps timings stable.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("corpora")


@pytest.fixture(scope="session")
def librispeech_tiny(corpus_dir) -> Path:
    """Path to a tiny synthetic ``LibriSpeech`` directory (train-clean-100, dev-clean, test-clean)."""
    from w2v.data.synth import make_corpus, make_spec

    return make_corpus(corpus_dir, make_spec("librispeech", "tiny", seed=0), progress=False)


@pytest.fixture(scope="session")
def aishell_tiny(corpus_dir) -> Path:
    """Path to a tiny synthetic ``data_aishell`` directory; its parent is the AISHELL corpus dir."""
    from w2v.data.synth import make_corpus, make_spec

    return make_corpus(corpus_dir, make_spec("aishell", "tiny", seed=0), progress=False)


@pytest.fixture(scope="session")
def librispeech_tiny_manifests(librispeech_tiny, tmp_path_factory) -> dict:
    """part -> PartResult (recordings, supervisions) of the tiny LibriSpeech corpus."""
    from w2v.data.prepare import prepare_librispeech

    out = tmp_path_factory.mktemp("manifests")
    return prepare_librispeech(librispeech_tiny, out, ("train-clean-100", "dev-clean", "test-clean"))


@pytest.fixture(scope="session")
def librispeech_tiny_cuts(librispeech_tiny_manifests) -> dict:
    """part -> lhotse CutSet of raw audio (no features) of the tiny LibriSpeech corpus."""
    from lhotse import CutSet

    return {
        part: CutSet.from_manifests(recordings=r.recordings, supervisions=r.supervisions)
        for part, r in librispeech_tiny_manifests.items()
    }
