"""Write the transcripts of supervision manifests as plain text, one utterance per line.

Usage:
  python -m w2v.bin.export_text --out data/lang_bpe_500/transcript_words.txt \
      data/manifests/librispeech_supervisions_train-clean-100.jsonl.gz [more manifests ...]
  # AISHELL: words as segmented in the corpus transcript (supervision.custom["words"])
  python -m w2v.bin.export_text --words --out data/lang_char/transcript_words.txt \
      data/manifests/aishell_supervisions_train.jsonl.gz

The text feeds BPE training, the lexicon's word list and the n-gram LM. Chinese supervisions
(AISHELL) are written in the one Mandarin normal form (w2v.data.text.normalize_mandarin), the one
the lexicon and the training targets use, also when their manifests predate it. Written atomically.
"""

from __future__ import annotations

import argparse
import sys

from lhotse import SupervisionSet

from w2v.data.text import normalize_mandarin
from w2v.utils import atomic_write_text


def transcript_lines(manifests: list[str], words: bool = False) -> list[str]:
    """Transcripts in manifest order; ``words`` takes the word segmentation kept by AISHELL prep."""
    lines = []
    for path in manifests:
        for sup in SupervisionSet.from_file(path):
            text = sup.custom.get("words", sup.text) if words and sup.custom else sup.text
            if sup.language == "Chinese":
                text = normalize_mandarin(text)
            text = " ".join(text.split())
            if text:
                lines.append(text)
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--words", action="store_true", help="use supervision.custom['words'] when present")
    p.add_argument("manifests", nargs="+")
    args = p.parse_args(argv)
    lines = transcript_lines(args.manifests, args.words)
    if not lines:
        print(f"export_text: no transcripts in {args.manifests}", file=sys.stderr)
        return 1
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print(f"{len(lines)} transcripts -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
