"""Directories of untranscribed audio → a lhotse recordings manifest for self-supervised pretraining.

Usage:
  python -m w2v.bin.prepare_unlabeled --dirs download/LibriSpeech/unlabeled --out-dir data/manifests
  python -m w2v.bin.prepare_unlabeled --dirs /data/podcasts /data/lectures --out-dir data/manifests \
      [--nj 2] [--resample true] [--cuts-out data/manifests/unlabeled_cuts.jsonl.gz]

Every .flac .mp3 .ogg .wav file under the directories (any depth, no transcripts) is one recording,
its id the path relative to its directory without the extension, ``/`` → ``_`` (prefixed ``0_``,
``1_``, ... when several directories are given). Writes ``<out-dir>/unlabeled_recordings.jsonl.gz``
and ``<out-dir>/rejected_unlabeled.txt`` (one ``path<TAB>reason`` line per rejected file: corrupt,
truncated, not mono, or at another sample rate unless ``--resample true``, which keeps such files,
resampled to 16 kHz on load). ``--cuts-out`` also writes the cuts ``w2v.bin.pretrain --cuts`` takes
(recordings over 30 s split into equal windows). Exit status 2 when a directory is missing, holds no
audio file, or no file is usable.
"""

from __future__ import annotations

import argparse
import logging
import sys

from lhotse import RecordingSet

from w2v.data.unlabeled import prepare_unlabeled, unlabeled_cuts
from w2v.utils import atomic_path, setup_logging, str2bool


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dirs", nargs="+", required=True, help="directories of audio files, searched recursively")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--nj", type=int, default=2)
    p.add_argument("--resample", type=str2bool, default=False,
                   help="keep audio at other sample rates, resampled to 16 kHz on load (default: reject it)")
    p.add_argument("--cuts-out", default=None, help="also write pretraining cuts here (.jsonl.gz)")
    args = p.parse_args(argv)
    if args.cuts_out and not args.cuts_out.endswith(".jsonl.gz"):
        p.error(f"--cuts-out must end in .jsonl.gz, got {args.cuts_out}")
    setup_logging()
    try:
        manifest = prepare_unlabeled(args.dirs, args.out_dir, nj=args.nj, resample=args.resample)
    except (FileNotFoundError, ValueError) as e:
        logging.error(str(e))
        return 2
    recordings = RecordingSet.from_file(manifest)
    if args.cuts_out:
        with atomic_path(args.cuts_out, suffix=".tmp.jsonl.gz") as tmp:
            unlabeled_cuts(recordings).to_file(tmp)
    print(f"unlabeled: {len(recordings)} recordings, {sum(r.duration for r in recordings) / 3600:.2f} h → {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
