"""Text → CTC target ids, with the ids of the lang dir's ``tokens.txt`` (``<blk>`` = 0).

BPE: ``lang_dir/bpe.model`` (sentencepiece trained with ``<blk>``, ``<sos/eos>`` as the first user
symbols, so piece ids are token ids). Char: ``lang_dir/tokens.txt`` maps single characters;
whitespace is dropped (Mandarin), unknown characters map to ``<unk>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def read_tokens(path: str | Path) -> dict[str, int]:
    """``tokens.txt`` as a symbol → id map (disambiguation symbols ``#k`` included)."""
    table: dict[str, int] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise ValueError(f"{path}:{n}: expected 'SYMBOL ID', got {line!r}")
        table[parts[0]] = int(parts[1])
    if table.get("<blk>") != 0:
        raise ValueError(f"{path}: '<blk>' must have id 0 (CTC blank), got {table.get('<blk>')}")
    return table


def num_ctc_tokens(tokens: dict[str, int]) -> int:
    """Output dimension V: the largest non-disambiguation id + 1."""
    return max(i for s, i in tokens.items() if not (s.startswith("#") and s[1:].isdigit())) + 1


class Tokenizer:
    """Encodes transcripts to token ids for CTC (never emits blank)."""

    def __init__(self, lang_dir: str | Path, token_type: str = "bpe") -> None:
        lang_dir = Path(lang_dir)
        self.token_type = token_type
        self.tokens = read_tokens(lang_dir / "tokens.txt")
        self.num_tokens = num_ctc_tokens(self.tokens)
        if token_type == "bpe":
            import sentencepiece as spm

            self.sp = spm.SentencePieceProcessor()
            self.sp.load(str(lang_dir / "bpe.model"))
            for piece, i in self.tokens.items():
                if i < self.sp.get_piece_size() and self.sp.id_to_piece(i) != piece:
                    raise ValueError(
                        f"{lang_dir}: tokens.txt id {i} is {piece!r} but bpe.model has "
                        f"{self.sp.id_to_piece(i)!r}; regenerate tokens.txt from bpe.model"
                    )
        elif token_type == "char":
            self.sp = None
            self.unk = self.tokens.get("<unk>")
        else:
            raise ValueError(f"token_type must be 'bpe' or 'char', got {token_type!r}")

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        if self.sp is not None:
            return [list(ids) for ids in self.sp.encode(list(texts), out_type=int)]
        out = []
        for text in texts:
            ids = []
            for ch in text:
                if ch.isspace():
                    continue
                i = self.tokens.get(ch, self.unk)
                if i is None:
                    raise ValueError(f"Character {ch!r} is not in tokens.txt and there is no <unk>")
                ids.append(i)
            out.append(ids)
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids (no blanks) → text; used for greedy-search WER during development."""
        if self.sp is not None:
            return self.sp.decode([int(i) for i in ids])
        inv = {i: s for s, i in self.tokens.items()}
        return "".join(inv[int(i)] for i in ids)
