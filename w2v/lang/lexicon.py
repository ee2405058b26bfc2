"""Words, lexicons and the lexicon FST L for a BPE or character lang dir.

Layout (icefall's lang_bpe / lang_char):
  words.txt   ``<eps> 0``, ``<UNK> 1``, the sorted training words, then ``#0``, ``<s>``, ``</s>``.
  tokens.txt  ``<blk> 0`` ... every modelling unit ..., then ``#0``, ``#1``, ... last
              (read and written by :mod:`w2v.lang.symbols`).
  lexicon.txt ``WORD piece piece ...``; lexicon_disambig.txt adds ``#k`` to ambiguous entries.
  L.pt / L_disambig.pt  k2 FSAs (token → word), a loop through state 0 and no silence.

FSA files (L, HLG, G) hold ``fsa.as_dict()`` with tensors only (:func:`save_fsa`), so that
``torch.load(weights_only=True)`` reads them; :func:`load_fsa` reads them back.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import k2
import torch

from w2v import serialization
from w2v.data.text import mandarin_units, normalize_mandarin, split_units
from w2v.lang.symbols import BLANK, is_disambig, write_symbol_table
# Read here by w2v.decode.ctc and w2v.bin.decode until they import w2v.lang.symbols themselves.
from w2v.utils import atomic_path, atomic_write_text

Lexicon = list[tuple[str, list[str]]]

EPS = "<eps>"
UNK_WORD = "<UNK>"
SOS_EOS = "<sos/eos>"
UNK_TOKEN = "<unk>"
WORD_SPECIALS = (EPS, UNK_WORD, "#0", "<s>", "</s>")


# --------------------------------------------------------------------------- words


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


def split_chars(word: str) -> list[str]:
    """Mandarin modelling units of a normalised ``word``: each CJK character alone, Latin runs whole.

    ``"好的OK吗"`` → ``["好", "的", "OK", "吗"]``. The rule is :func:`w2v.data.text.split_units`,
    which the CTC training targets (:class:`w2v.asr.tokens.Tokenizer`) follow too.
    """
    return split_units(word)


def char_lexicon(words: Sequence[str], spell_units: bool = True) -> tuple[Lexicon, list[str]]:
    """Each word → its units (:func:`w2v.data.text.mandarin_units`, as the training targets).

    Returns (lexicon, sorted units).
    Args:
      words: words, no specials; normalised (:func:`w2v.data.text.normalize_mandarin`), or the
        lexicon holds words that no normalised transcript contains.
      spell_units: add every unit as a word of its own (``北`` beside ``北京``), so that the HLG
        can still spell a word outside the vocabulary unit by unit; the LM gives such words the
        probability of an unseen word (:func:`w2v.lang.arpa.estimate_kn` with ``vocab``).
    """
    lexicon = [(w, mandarin_units(w)) for w in words]
    empty = [w for w, p in lexicon if not p]
    if empty:
        raise ValueError(f"words without a Mandarin unit (punctuation only?): {empty[:10]}")
    units = sorted({u for _, p in lexicon for u in p})
    if spell_units:
        known = set(words)
        lexicon += [(u, [u]) for u in units if u not in known]
        lexicon.sort(key=lambda entry: entry[0])
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
    spell_units: bool = True,
) -> dict[str, Path]:
    """Write words.txt, tokens.txt, lexicon.txt, lexicon_disambig.txt, L.pt, L_disambig.pt.

    Args:
      lang_dir: for ``bpe`` it must hold ``bpe.model``.
      token_type: ``bpe`` (sentencepiece pieces) or ``char`` (Mandarin characters; words are
        normalised with :func:`w2v.data.text.normalize_mandarin`, as the transcripts should be).
      transcripts: training transcripts; default ``lang_dir/transcript_words.txt``.
      extra_words: optional file with more words (one per line) for the vocabulary.
      spell_units: ``char`` only: every unit is a word too (:func:`char_lexicon`), so the HLG can
        spell words outside the vocabulary.
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
        words = sorted({n for w in words for n in normalize_mandarin(w).split()} - set(WORD_SPECIALS))
        lexicon, chars = char_lexicon(words, spell_units)
        words = [w for w, _ in lexicon if w != UNK_WORD]
        units = [BLANK, SOS_EOS, UNK_TOKEN, *[c for c in chars if c not in (BLANK, SOS_EOS, UNK_TOKEN)]]
    else:
        raise ValueError(f"token_type must be 'bpe' or 'char', got {token_type!r}")
    if units[0] != BLANK:
        raise ValueError(f"token 0 must be {BLANK}, got {units[0]!r}")
    clashing = [u for u in units if is_disambig(u)]
    if clashing:
        raise ValueError(f"modelling units {clashing} are spelled like disambiguation symbols (#<digits>)")

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
        save_fsa(fsa, out[name])
    logging.info(
        "Lang dir %s: %d words, %d tokens (+%d disambig), token type %s",
        lang_dir, len(words), len(units), max_disambig + 1, token_type,
    )
    return out


_ROW_SPLITS = ".row_splits"


def save_fsa(fsa: k2.Fsa, path: str | os.PathLike) -> None:
    """Write ``fsa.as_dict()`` atomically, with plain tensors only.

    A ragged attribute ``name`` (``[arc][item]``, e.g. HLG's word ``aux_labels``) is stored as its
    values under ``name`` and its row splits under ``name.row_splits``: k2's ``RaggedTensor``
    would need a pickled class that ``torch.load(weights_only=True)`` refuses.
    """
    out: dict[str, torch.Tensor] = {}
    for name, value in fsa.as_dict().items():
        if isinstance(value, k2.RaggedTensor):
            if value.num_axes != 2:
                raise ValueError(f"{path}: ragged attribute {name} has {value.num_axes} axes; only 2 can be saved")
            out[name], out[name + _ROW_SPLITS] = value.values, value.shape.row_splits(1)
        elif isinstance(value, torch.Tensor):
            out[name] = value
        else:
            raise ValueError(f"{path}: FSA attribute {name} is a {type(value).__name__}, not a tensor")
    with atomic_path(path) as tmp:
        torch.save(out, tmp)


def load_fsa(path: str | os.PathLike) -> k2.Fsa:
    """Read an FSA written by :func:`save_fsa`, or by ``torch.save(fsa.as_dict())`` before it."""
    saved = serialization.load(path, what="graph")
    if not isinstance(saved, dict) or "arcs" not in saved:
        raise ValueError(f"{path}: expected a dict of FSA tensors with 'arcs'")
    for key in [k for k in saved if k.endswith(_ROW_SPLITS)]:
        name = key[: -len(_ROW_SPLITS)]
        if name not in saved:
            raise ValueError(f"{path}: {key} without the values of {name}")
        saved[name] = _ragged(saved.pop(key), saved[name])
    for name, value in saved.items():
        if isinstance(value, serialization.StandIn):  # a k2.RaggedTensor pickled by an older version
            saved[name] = _ragged_from_pickle(value, f"{path}: {name}")
    return k2.Fsa.from_dict(saved)


def _ragged(row_splits: torch.Tensor, values: torch.Tensor) -> k2.RaggedTensor:
    shape = k2.ragged.create_ragged_shape2(row_splits=row_splits, cached_tot_size=values.numel())
    return k2.RaggedTensor(shape, values)


def _ragged_from_pickle(stand_in: serialization.StandIn, source: str) -> k2.RaggedTensor:
    """k2 pickles a 2-axis RaggedTensor's state as ``(row_splits1, "row_ids1", values)``."""
    state = stand_in.state
    if (
        stand_in.global_name != "_k2.ragged.RaggedTensor"
        or not isinstance(state, tuple)
        or len(state) != 3
        or not all(isinstance(state[i], torch.Tensor) for i in (0, 2))
    ):
        raise ValueError(f"{source}: expected a 2-axis k2 RaggedTensor, found {stand_in!r}")
    return _ragged(state[0], state[2])

