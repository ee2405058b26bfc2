"""Text → CTC target ids, with the ids of the lang dir's ``tokens.txt`` (``<blk>`` = 0).

BPE: ``lang_dir/bpe.model`` (sentencepiece trained with ``<blk>``, ``<sos/eos>`` as the first user
symbols, so piece ids are token ids). Char: the Mandarin units of the text
(:func:`w2v.data.text.mandarin_units`, the rule the lexicon splits words by: CJK characters alone,
a Latin run such as ``KTV`` whole), looked up in ``lang_dir/tokens.txt``; a unit that is not
there maps to one ``<unk>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from w2v.data.text import join_units, mandarin_units
from w2v.lang.symbols import max_token_id, read_tokens


class Tokenizer:
    """Encodes transcripts to token ids for CTC (never emits blank)."""

    def __init__(self, lang_dir: str | Path, token_type: str = "bpe") -> None:
        lang_dir = Path(lang_dir)
        self.token_type = token_type
        self.tokens = read_tokens(lang_dir / "tokens.txt")
        self.num_tokens = max_token_id(self.tokens) + 1  # V: blank and every unit, no #k
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
            for unit in mandarin_units(text):
                i = self.tokens.get(unit, self.unk)
                if i is None:
                    raise ValueError(f"Unit {unit!r} is not in tokens.txt and there is no <unk>")
                ids.append(i)
            out.append(ids)
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids (no blanks) → text; used for greedy-search WER during development.

        Char: units are concatenated, with a space between two Latin runs (``HELLO WORLD``).
        """
        if self.sp is not None:
            return self.sp.decode([int(i) for i in ids])
        inv = {i: s for s, i in self.tokens.items()}
        return join_units([inv[int(i)] for i in ids])
