"""Symbol tables, lexicons and the lexicon FST L for a BPE or character lang dir.

Layout (icefall's lang_bpe / lang_char):
  words.txt   ``<eps> 0``, ``<UNK> 1``, the sorted training words, then ``#0``, ``<s>``, ``</s>``.
  tokens.txt  ``<blk> 0`` ... every modelling unit ..., then ``#0``, ``#1``, ... last.
  lexicon.txt ``WORD piece piece ...``; lexicon_disambig.txt adds ``#k`` to ambiguous entries.
  L.pt / L_disambig.pt  k2 FSAs (token → word), a loop through state 0 and no silence.
"""

from __future__ import annotations

import logging
import os
import unicodedata
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import k2
import torch

from w2v.utils import atomic_path, atomic_write_text

Lexicon = list[tuple[str, list[str]]]

EPS = "<eps>"
UNK_WORD = "<UNK>"
BLANK = "<blk>"
SOS_EOS = "<sos/eos>"
UNK_TOKEN = "<unk>"
WORD_SPECIALS = (EPS, UNK_WORD, "#0", "<s>", "</s>")


# --------------------------------------------------------------------------- symbol tables


def write_symbol_table(path: str | os.PathLike, symbols: Sequence[str]) -> None:
    """Write ``symbol id`` lines, ids in list order."""
    if len(set(symbols)) != len(symbols):
        raise ValueError(f"duplicate symbols for {path}")
    atomic_write_text(path, "".join(f"{s} {i}\n" for i, s in enumerate(symbols)))


def read_symbol_table(path: str | os.PathLike) -> dict[str, int]:
    table: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise ValueError(f"{path}:{n}: expected 'symbol id', got {line!r}")
            table[fields[0]] = int(fields[1])
    return table


def read_words(transcripts: str | os.PathLike) -> list[str]:
    """Sorted distinct words of a transcript file (one utterance per line)."""
    words: set[str] = set()
    with open(transcripts, encoding="utf-8") as f:
        for line in f:
            words.update(line.split())
    return sorted(words - set(WORD_SPECIALS))


def word_symbols(words: Iterable[str]) -> list[str]:
    """icefall's words.txt order: ``<eps>``, ``<UNK>``, words, ``#0``, ``<s>``, ``</s>``."""
    body = sorted(set(words) - set(WORD_SPECIALS))
    return [EPS, UNK_WORD, *body, "#0", "<s>", "</s>"]


# --------------------------------------------------------------------------- lexicons


def write_lexicon(path: str | os.PathLike, lexicon: Lexicon) -> None:
    atomic_write_text(path, "".join(f"{w} {' '.join(p)}\n" for w, p in lexicon))


def read_lexicon(path: str | os.PathLike) -> Lexicon:
    lexicon: Lexicon = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2:
                raise ValueError(f"{path}:{n}: word without pronunciation: {line!r}")
            lexicon.append((fields[0], fields[1:]))
    return lexicon


def bpe_lexicon(words: Sequence[str], sp) -> Lexicon:
    """Each word → its sentencepiece pieces; ``<UNK>`` → ``<unk>``."""
    pieces = sp.encode(list(words), out_type=str)
    lexicon = [(w, p) for w, p in zip(words, pieces)]
    lexicon.append((UNK_WORD, [sp.id_to_piece(sp.unk_id())]))
    return lexicon


def _is_cjk(ch: str) -> bool:
    return "CJK" in unicodedata.name(ch, "")


def split_chars(word: str) -> list[str]:
    """Mandarin modelling units of ``word``: each CJK character alone, other runs kept whole.

    ``"好的OK吗"`` → ``["好", "的", "OK", "吗"]``.
    """
    units: list[str] = []
    run = ""
    for ch in word:
        if _is_cjk(ch):
            if run:
                units.append(run)
                run = ""
            units.append(ch)
        else:
            run += ch
    if run:
        units.append(run)
    return units


def char_lexicon(words: Sequence[str]) -> tuple[Lexicon, list[str]]:
    """Each word → its characters. Returns (lexicon, sorted units)."""
    lexicon = [(w, split_chars(w)) for w in words]
    units = sorted({u for _, p in lexicon for u in p})
    lexicon.append((UNK_WORD, [UNK_TOKEN]))
    return lexicon, units


def add_disambig_symbols(lexicon: Lexicon) -> tuple[Lexicon, int]:
    """Append ``#1``, ``#2``, ... so no pronunciation is a prefix of, or equal to, another.

    Without them LG cannot be determinised (homophones, prefix pronunciations).
    Returns the new lexicon and the largest disambiguation index used (0 if none).
    """
    count = defaultdict(int)
    for _, p in lexicon:
        count[" ".join(p)] += 1
    prefixes = set()
    for _, p in lexicon:
        for i in range(1, len(p)):
            prefixes.add(" ".join(p[:i]))
    next_id: dict[str, int] = defaultdict(int)
    out: Lexicon = []
    max_disambig = 0
    for w, p in lexicon:
        key = " ".join(p)
        if key in prefixes or count[key] > 1:
            next_id[key] += 1
            max_disambig = max(max_disambig, next_id[key])
            out.append((w, p + [f"#{next_id[key]}"]))
        else:
            out.append((w, list(p)))
    return out, max_disambig


# --------------------------------------------------------------------------- L as a k2 FSA


def lexicon_to_fst(
    lexicon: Lexicon,
    token2id: dict[str, int],
    word2id: dict[str, int],
    need_self_loops: bool = False,
) -> k2.Fsa:
    """L: a loop through state 0, one chain of token arcs per entry, the word on its first arc.

    Args:
      need_self_loops: add a ``#0:#0`` self-loop on the loop state, so the ``#0`` backoff
        arcs of G pass through ``L_disambig ∘ G``.
    Returns:
      k2 FSA, labels = token ids, aux_labels = word ids, all scores 0.
    """
    arcs: list[tuple[int, int, int, int]] = []
    next_state = 1
    eps = 0
    for word, pieces in lexicon:
        if word not in word2id:
            raise KeyError(f"lexicon word {word!r} missing from words.txt")
        missing = [p for p in pieces if p not in token2id]
        if missing:
            raise KeyError(f"lexicon entry {word!r}: tokens {missing} missing from tokens.txt")
        src = 0
        for i, piece in enumerate(pieces):
            dst = 0 if i == len(pieces) - 1 else next_state
            if dst:
                next_state += 1
            arcs.append((src, dst, token2id[piece], word2id[word] if i == 0 else eps))
            src = dst
    if need_self_loops:
        arcs.append((0, 0, token2id["#0"], word2id["#0"]))
    final = next_state
    arcs.append((0, final, -1, -1))
    arcs.sort(key=lambda a: a[0])
    lines = [f"{s} {d} {t} {w} 0.0" for s, d, t, w in arcs]
    lines.append(str(final))
    fsa = k2.Fsa.from_str("\n".join(lines), acceptor=False)
    return k2.arc_sort(fsa)


# --------------------------------------------------------------------------- the lang dir


def prepare_lang(
    lang_dir: str | os.PathLike,
    token_type: str = "bpe",
    transcripts: str | os.PathLike | None = None,
    extra_words: str | os.PathLike | None = None,
) -> dict[str, Path]:
    """Write words.txt, tokens.txt, lexicon.txt, lexicon_disambig.txt, L.pt, L_disambig.pt.

    Args:
      lang_dir: for ``bpe`` it must hold ``bpe.model``.
      token_type: ``bpe`` (sentencepiece pieces) or ``char`` (Mandarin characters).
      transcripts: training transcripts; default ``lang_dir/transcript_words.txt``.
      extra_words: optional file with more words (one per line) for the vocabulary.
    Returns:
      name → path of every file written.
    """
    lang_dir = Path(lang_dir)
    transcripts = Path(transcripts) if transcripts else lang_dir / "transcript_words.txt"
    words = read_words(transcripts)
    if extra_words:
        with open(extra_words, encoding="utf-8") as f:
            words = sorted(set(words) | {ln.split()[0] for ln in f if ln.split()} - set(WORD_SPECIALS))
    if not words:
        raise ValueError(f"no words in {transcripts}")

    if token_type == "bpe":
        from w2v.lang.bpe import load_bpe

        sp = load_bpe(lang_dir / "bpe.model")
        lexicon = bpe_lexicon(words, sp)
        units = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    elif token_type == "char":
        lexicon, chars = char_lexicon(words)
        units = [BLANK, SOS_EOS, UNK_TOKEN, *[c for c in chars if c not in (BLANK, SOS_EOS, UNK_TOKEN)]]
    else:
        raise ValueError(f"token_type must be 'bpe' or 'char', got {token_type!r}")
    if units[0] != BLANK:
        raise ValueError(f"token 0 must be {BLANK}, got {units[0]!r}")

    lexicon_disambig, max_disambig = add_disambig_symbols(lexicon)
    token_symbols = units + [f"#{i}" for i in range(max_disambig + 1)]
    words_list = word_symbols(words)

    out = {
        "words": lang_dir / "words.txt",
        "tokens": lang_dir / "tokens.txt",
        "lexicon": lang_dir / "lexicon.txt",
        "lexicon_disambig": lang_dir / "lexicon_disambig.txt",
        "L": lang_dir / "L.pt",
        "L_disambig": lang_dir / "L_disambig.pt",
    }
    write_symbol_table(out["words"], words_list)
    write_symbol_table(out["tokens"], token_symbols)
    write_lexicon(out["lexicon"], lexicon)
    write_lexicon(out["lexicon_disambig"], lexicon_disambig)
    token2id = {t: i for i, t in enumerate(token_symbols)}
    word2id = {w: i for i, w in enumerate(words_list)}
    L = lexicon_to_fst(lexicon, token2id, word2id)
    L_disambig = lexicon_to_fst(lexicon_disambig, token2id, word2id, need_self_loops=True)
    for name, fsa in (("L", L), ("L_disambig", L_disambig)):
        with atomic_path(out[name]) as tmp:
            torch.save(fsa.as_dict(), tmp)
    logging.info(
        "Lang dir %s: %d words, %d tokens (+%d disambig), token type %s",
        lang_dir, len(words), len(units), max_disambig + 1, token_type,
    )
    return out


def load_fsa(path: str | os.PathLike) -> k2.Fsa:
    return k2.Fsa.from_dict(torch.load(path, map_location="cpu", weights_only=False))


def max_token_id(tokens: dict[str, int]) -> int:
    """Largest id that is a modelling unit (not a ``#k`` disambiguation symbol)."""
    return max(i for t, i in tokens.items() if not t.startswith("#"))
