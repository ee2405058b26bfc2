"""Prepared manifests (and a lang dir's tokens) → a wenet data directory.

Usage:
  python -m w2v.bin.export_wenet --manifest-dir data/manifests --parts train dev test \
      --out-dir data/wenet [--lang-dir data/lang_char] [--corpus aishell] [--words false]

Writes ``<out-dir>/<part>/{data.list,wav.scp,text,utt2spk}`` from
``<manifest-dir>/<corpus>_{recordings,supervisions}_<part>.jsonl.gz`` (keys are the supervision
ids, audio paths absolute, text the normalised transcript without spaces as wenet's AISHELL recipe
trains on it; ``--words true``: the word-segmented transcript instead), and with ``--lang-dir``
``<out-dir>/units.txt`` from its tokens.txt in wenet's convention (``<blank> 0``, ``<unk> 1``, the
units in our order, ``<sos/eos>`` last; ``#k`` dropped). The result is itself a corpus directory:
``egs/aishell/run.sh --corpus-dir <out-dir>`` reads it back. Every file is written atomically.
Exit status 2 for a missing manifest or tokens.txt.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lhotse import RecordingSet, SupervisionSet

from w2v.data.wenet import export_wenet, write_units
from w2v.lang.symbols import read_tokens
from w2v.utils import str2bool


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest-dir", required=True)
    p.add_argument("--parts", nargs="+", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--corpus", default="aishell", help="manifest name prefix (default aishell)")
    p.add_argument("--lang-dir", help="also write units.txt from this lang dir's tokens.txt")
    p.add_argument("--words", type=str2bool, default=False,
                   help="text as segmented words (supervision.custom['words']), not the spaceless normalised text")
    args = p.parse_args(argv)
    manifest_dir, out_dir = Path(args.manifest_dir), Path(args.out_dir)
    try:
        tokens = read_tokens(Path(args.lang_dir) / "tokens.txt") if args.lang_dir else None
        for part in args.parts:
            rec = manifest_dir / f"{args.corpus}_recordings_{part}.jsonl.gz"
            sup = manifest_dir / f"{args.corpus}_supervisions_{part}.jsonl.gz"
            for f in (rec, sup):
                if not f.is_file():
                    raise FileNotFoundError(f"no manifest {f}")
            supervisions = SupervisionSet.from_file(sup)
            export_wenet(RecordingSet.from_file(rec), supervisions, out_dir / part, words=args.words)
            print(f"{part}: {len(supervisions)} utterances -> {out_dir / part}")
        if tokens is not None:
            write_units(out_dir / "units.txt", tokens)
            print(f"units.txt ({args.lang_dir}/tokens.txt in wenet's order) -> {out_dir / 'units.txt'}")
    except (FileNotFoundError, ValueError) as e:
        print(f"export_wenet: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
