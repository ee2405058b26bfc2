"""Stage records for the recipes' shell stages (w2v/runtime/records.py): skip, resume or rebuild.

Usage:
  python -m w2v.bin.stage_record begin --record data/fbank/.librispeech_cuts_dev-clean.json \\
      --stage "fbank dev-clean" --inputs data/manifests/librispeech_recordings_dev-clean.jsonl.gz \\
      --options speed_perturb=false --outputs data/fbank/librispeech_cuts_dev-clean.jsonl.gz
  # prints "skip: <why>", "resume: <why>" or "rebuild: <why>" (outputs removed, or moved aside
  # with --replace archive) and exits 0; exits 2 naming a missing input or bad arguments
  python -m w2v.bin.stage_record finish --record data/fbank/.librispeech_cuts_dev-clean.json

local/stages.sh wraps both (stage_begin / stage_end) and holds a lock per record meanwhile.
"""

from __future__ import annotations

import argparse
import sys

from w2v.runtime import records


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} takes key=value pairs, got {v!r}")
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    b = sub.add_parser("begin")
    b.add_argument("--record", required=True)
    b.add_argument("--stage", required=True)
    b.add_argument("--inputs", nargs="*", default=[])
    b.add_argument("--options", nargs="*", default=[], help="key=value; a change rebuilds")
    b.add_argument("--progress", nargs="*", default=[], help="key=value; a change resumes")
    b.add_argument("--outputs", nargs="*", default=[])
    b.add_argument("--replace", choices=["delete", "archive"], default="delete")
    b.add_argument("--resumable", action="store_true", help="never skip: the command resumes itself")
    b.add_argument("--command", default="")
    b.add_argument("--pid", type=int, default=None)
    f = sub.add_parser("finish")
    f.add_argument("--record", required=True)
    args = p.parse_args(argv)
    try:
        if args.action == "finish":
            records.finish(args.record)
            return 0
        decision = records.begin(
            args.record, args.stage, args.inputs, _pairs(args.options, "--options"),
            _pairs(args.progress, "--progress"), args.outputs, args.replace, args.command, args.pid,
            args.resumable,
        )
    except (OSError, ValueError) as e:
        print(f"stage_record: {e}", file=sys.stderr)
        return 2
    print(decision)
    return 0


if __name__ == "__main__":
    sys.exit(main())
