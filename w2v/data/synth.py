"""Synthetic speech corpora in the exact on-disk layouts of LibriSpeech and AISHELL-1.

Speech comes from espeak-ng as shipped inside the ``espeakng-loader`` wheel (no system package).
Each speaker is a distinct voice (accent x voice variant x base pitch x base rate); every utterance
jitters rate and pitch and gets a little white noise. Everything is a pure function of ``seed``.

Optionally a corpus also has an audio-only part for self-supervised pretraining (the few-labels
setting of wav2vec 2.0), in the same file layout as a labelled part but with no transcript:
``LibriSpeech/unlabeled/<spk>/<chapter>/<utt>.flac`` or ``data_aishell/wav/unlabeled/<spk>/<utt>.wav``.
Its speakers are new (ids no labelled part uses) and twice as dense per minute as in the train part,
and it speaks only training-side sentences. It has a random stream of its own, so the other parts
come out the same with or without it.

The corpus is built under a temporary name beside its destination and renamed when complete, with
a fingerprint (``.w2v-synth.json``) so a rerun recognises its own corpus and never overwrites a
different one.
"""

from __future__ import annotations

import ctypes
import json
import math
import zlib
import logging
import random
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio
from tqdm import tqdm

from w2v.data.text import LANGUAGES
from w2v.runtime import SAMPLE_RATE
from w2v.utils import atomic_write_text

FINGERPRINT = ".w2v-synth.json"
LAYOUTS = {"librispeech": "english", "aishell": "mandarin"}
# Seconds of speech per part for the named sizes (train, dev, test).
SIZES = {
    "tiny": (150.0, 30.0, 40.0),
    "mini": (1500.0, 150.0, 180.0),
    "small": (6 * 3600.0, 600.0, 600.0),
}
LIBRISPEECH_PARTS = ("train-clean-100", "dev-clean", "test-clean")
AISHELL_PARTS = ("train", "dev", "test")
UNLABELED_PART = "unlabeled"  # audio only, after the labelled parts
_UNLABELED_INDEX = 3
# Speaker ids of the real AISHELL-1 parts, so prefixes look familiar; unlabelled ones above them all.
_AISHELL_FIRST_SPEAKER = {"train": 2, "dev": 724, "test": 764, UNLABELED_PART: 1000}


class CorpusExistsError(RuntimeError):
    """The output directory already holds a corpus this call did not make."""


class Espeak:
    """Synchronous espeak-ng through ctypes.

    espeak-ng keeps static state from one utterance to the next (even across
    espeak_Terminate/espeak_Initialize), so output depends on everything spoken before. Each
    instance therefore loads a private copy of the library: a fresh instance speaking the same
    sequence gives the same samples.
    """

    def __init__(self) -> None:
        import espeakng_loader

        self._dir = tempfile.TemporaryDirectory(prefix="w2v-espeak-")
        private = Path(self._dir.name) / "libespeak-ng.so"
        shutil.copyfile(espeakng_loader.get_library_path(), private)
        self.lib = ctypes.CDLL(str(private), mode=ctypes.RTLD_LOCAL)
        data = espeakng_loader.get_data_path().encode()
        # 2 = AUDIO_OUTPUT_SYNCHRONOUS: samples come back through the callback.
        self.sample_rate = self.lib.espeak_Initialize(2, 0, data, 0)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed (data path {data.decode()})")
        self._chunks: list[np.ndarray] = []
        cb_type = ctypes.CFUNCTYPE(
            ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
        )

        def on_audio(wav, n, _events):
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = cb_type(on_audio)  # keep a reference: ctypes does not
        self.lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()
        # built once: the sinc kernel is the expensive part of resampling
        self.resampler = torchaudio.transforms.Resample(self.sample_rate, SAMPLE_RATE)

    def synth(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        """Speak ``text``; returns int16 samples at ``self.sample_rate``."""
        with self._lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"espeak-ng has no voice '{voice}'")
            self.lib.espeak_SetParameter(1, int(rate), 0)  # espeakRATE, words per minute
            self.lib.espeak_SetParameter(3, int(pitch), 0)  # espeakPITCH, 0..100
            self._chunks = []
            data = text.encode("utf-8")
            # position_type 1 = POS_CHARACTER, flags 1 = espeakCHARS_UTF8
            err = self.lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 1, None, None)
            self.lib.espeak_Synchronize()
            if err != 0 or not self._chunks:
                raise RuntimeError(f"espeak-ng failed on {text!r} with voice {voice} (error {err})")
            return np.concatenate(self._chunks)


@dataclass(frozen=True)
class Speaker:
    id: int
    voice: str  # e.g. "en-us+f2"
    pitch: int
    rate: int
    sex: str


@dataclass(frozen=True)
class CorpusSpec:
    """Everything that determines a synthetic corpus; stored as its fingerprint."""

    layout: str
    seed: int
    seconds: tuple[float, float, float]
    speakers_per_part: tuple[int, int, int]
    snr_db: tuple[float, float] = (20.0, 40.0)
    version: int = 1
    unlabeled_seconds: float = 0.0  # the audio-only part; 0: none
    unlabeled_speakers: int = 0


def make_spec(
    layout: str, size: str = "mini", seed: int = 0, minutes: float | None = None, unlabeled_minutes: float = 0.0
) -> CorpusSpec:
    """Resolve a named ``size`` (or ``minutes`` of labelled speech in all) into a full spec.

    ``unlabeled_minutes``: length of the audio-only part (0: none), spoken by twice as many
    speakers per minute as the train part, so that pretraining hears many voices.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown --layout '{layout}'; expected one of {sorted(LAYOUTS)}")
    if minutes is not None:
        if minutes <= 0:
            raise ValueError(f"--minutes must be positive, got {minutes}")
        total = minutes * 60.0
        seconds = (0.82 * total, 0.08 * total, 0.10 * total)
    elif size in SIZES:
        seconds = SIZES[size]
    else:
        raise ValueError(f"unknown --size '{size}'; expected one of {sorted(SIZES)}")
    # many short speakers: voice variety is what lets a model generalise to unseen test voices
    spk = tuple(max(2, min(80, int(s / 30))) for s in seconds)
    if unlabeled_minutes < 0:
        raise ValueError(f"--unlabeled-minutes must be 0 or more, got {unlabeled_minutes}")
    unlabeled = unlabeled_minutes * 60.0
    unlabeled_spk = max(2, math.ceil(2 * unlabeled * spk[0] / seconds[0])) if unlabeled else 0
    return CorpusSpec(
        layout=layout, seed=seed, seconds=seconds, speakers_per_part=spk,
        unlabeled_seconds=unlabeled, unlabeled_speakers=unlabeled_spk,
    )


def _fingerprint(spec: CorpusSpec) -> dict:
    """The spec as JSON data; without the unlabelled fields when there is no such part, so corpora
    made before it existed keep their fingerprint."""
    fp = json.loads(json.dumps(asdict(spec)))
    if not spec.unlabeled_seconds:
        del fp["unlabeled_seconds"], fp["unlabeled_speakers"]
    return fp


def _part_name(layout: str, part_index: int) -> str:
    return ((LIBRISPEECH_PARTS if layout == "librispeech" else AISHELL_PARTS) + (UNLABELED_PART,))[part_index]


def _speakers(spec: CorpusSpec, part_index: int, count: int, rng: random.Random) -> list[Speaker]:
    """``count`` voices for part ``part_index``; ids are unique across parts (LibriSpeech: labelled
    parts have fewer than 1000 speakers each, so 37 * (part_index * 1000 + i) never meet)."""
    lang = LANGUAGES[LAYOUTS[spec.layout]]
    out = []
    for i in range(count):
        variant = rng.choice(lang.variants)
        sex = "F" if variant.startswith("f") or variant in ("linda", "belinda", "aunty", "anika") else "M"
        if spec.layout == "librispeech":
            sid = 100 + 37 * (part_index * 1000 + i) + rng.randrange(30)
        else:
            sid = _AISHELL_FIRST_SPEAKER[_part_name(spec.layout, part_index)] + i
        out.append(
            Speaker(
                id=sid,
                voice=f"{rng.choice(lang.voices)}+{variant}",
                pitch=rng.randint(30, 70),
                rate=rng.randint(145, 185),
                sex=sex,
            )
        )
    return out


def _render(espeak: Espeak, text: str, spk: Speaker, rng: random.Random, snr_db: tuple[float, float]) -> np.ndarray:
    """Text → float32 mono 16 kHz with per-utterance rate/pitch jitter and white noise."""
    raw = espeak.synth(
        text,
        spk.voice,
        rate=spk.rate + rng.randint(-12, 12),
        pitch=max(0, min(100, spk.pitch + rng.randint(-6, 6))),
    )
    wav = torch.from_numpy(raw.astype(np.float32) / 32768.0)
    wav = espeak.resampler(wav).numpy()
    power = float(np.mean(wav**2)) + 1e-10
    snr = rng.uniform(*snr_db)
    noise = np.random.default_rng(rng.getrandbits(32)).standard_normal(wav.shape[0])
    wav = wav + noise.astype(np.float32) * np.sqrt(power / 10 ** (snr / 10))
    peak = float(np.abs(wav).max()) + 1e-9
    gain = rng.uniform(0.3, 0.9) / peak
    return (wav * gain).astype(np.float32)


def _in_part(sentence: str, part_index: int) -> bool:
    """Sentences are split between train and dev/test by a stable hash, so test text is unseen."""
    held_out = zlib.crc32(sentence.encode("utf-8")) % 8 == 0
    return held_out == (part_index > 0)


def _sentences(spec: CorpusSpec, part_index: int, rng: random.Random) -> Iterator[str]:
    lang = LANGUAGES[LAYOUTS[spec.layout]]
    while True:
        s = lang.sentence(rng)
        if _in_part(s, part_index):
            yield s


def _existing(root: Path) -> dict | None:
    fp = root / FINGERPRINT
    if fp.is_file():
        return json.loads(fp.read_text())
    return None


def corpus_root(out_dir: Path, layout: str) -> Path:
    return Path(out_dir) / ("LibriSpeech" if layout == "librispeech" else "data_aishell")


@dataclass
class _PartWriter:
    """What the speakers of one part share: the output dir, the voice engine, the random stream, the text."""

    tmp: Path
    spec: CorpusSpec
    part: str
    rng: random.Random
    sentences: Iterator[str]
    transcribed: bool
    espeak: Espeak
    bar: tqdm

    def speaker(self, spk: Speaker, seconds: float) -> tuple[list[str], float]:
        """Utterances of ``spk`` until ``seconds`` of audio (at least one); LibriSpeech transcripts
        are written beside them. Returns (AISHELL transcript lines, seconds written)."""
        done, utt = 0.0, 0
        chapter = 1000 + self.rng.randrange(9000)
        by_chapter: dict[int, list[str]] = {}
        transcript_lines: list[str] = []
        while utt == 0 or done < seconds:
            text = next(self.sentences)
            wav = _render(self.espeak, text, spk, self.rng, self.spec.snr_db)
            if self.spec.layout == "librispeech":
                if utt and utt % 40 == 0:  # a new chapter every 40 utterances, like books
                    chapter += 1
                uid = f"{spk.id}-{chapter}-{utt:04d}"
                d = self.tmp / self.part / str(spk.id) / str(chapter)
                d.mkdir(parents=True, exist_ok=True)
                sf.write(d / f"{uid}.flac", wav, SAMPLE_RATE, subtype="PCM_16")
                by_chapter.setdefault(chapter, []).append(f"{uid} {text}")
            else:
                uid = f"BAC009S{spk.id:04d}W{utt + 121:04d}"
                d = self.tmp / "wav" / self.part / f"S{spk.id:04d}"
                d.mkdir(parents=True, exist_ok=True)
                sf.write(d / f"{uid}.wav", wav, SAMPLE_RATE, subtype="PCM_16")
                transcript_lines.append(f"{uid} {text}")
            dur = wav.shape[0] / SAMPLE_RATE
            done += dur
            self.bar.update(min(dur, self.bar.total - self.bar.n))  # speakers overshoot by a sentence
            utt += 1
        if not self.transcribed:
            return [], done
        for ch, lines in by_chapter.items():
            trans = self.tmp / self.part / str(spk.id) / str(ch) / f"{spk.id}-{ch}.trans.txt"
            trans.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return transcript_lines, done


def _writer(tmp: Path, spec: CorpusSpec, p: int, seconds: float, progress: bool) -> tuple[_PartWriter, list[Speaker]]:
    """The writer and speakers of part ``p``. The unlabelled part speaks training-side sentences
    only, so no test sentence is heard in pretraining."""
    part = _part_name(spec.layout, p)
    rng = random.Random(f"{spec.seed}/{spec.layout}/{part}")
    labelled = p != _UNLABELED_INDEX
    count = spec.speakers_per_part[p] if labelled else spec.unlabeled_speakers
    speakers = _speakers(spec, p, count, rng)  # drawn before the (lazy) sentences
    sentences = _sentences(spec, p if labelled else 0, rng)
    bar = tqdm(total=round(seconds), unit="s", desc=f"synthesising {spec.layout} {part}",
               disable=not progress, mininterval=5)
    return _PartWriter(tmp, spec, part, rng, sentences, labelled, Espeak(), bar), speakers


def _synth_part(tmp: Path, spec: CorpusSpec, p: int, progress: bool) -> tuple[list[str], list[str]]:
    """Synthesise labelled part ``p`` under ``tmp``; returns (AISHELL transcript lines, speaker lines).

    Each speaker speaks until its own share is reached.
    """
    writer, speakers = _writer(tmp, spec, p, spec.seconds[p], progress)
    share = spec.seconds[p] / len(speakers)
    transcript_lines: list[str] = []
    speaker_lines: list[str] = []
    for spk in speakers:
        lines, done = writer.speaker(spk, share)
        transcript_lines += lines
        speaker_lines.append(_speaker_line(spk, writer.part, done))
    writer.bar.close()
    return transcript_lines, speaker_lines


def _synth_unlabeled(tmp: Path, spec: CorpusSpec, progress: bool) -> list[str]:
    """Synthesise the audio-only part under ``tmp``; returns its speaker lines.

    The speakers share one budget (each stops when the part reaches its share so far): with many
    short speakers the part then overshoots its length by at most one sentence, not one per speaker.
    """
    writer, speakers = _writer(tmp, spec, _UNLABELED_INDEX, spec.unlabeled_seconds, progress)
    share = spec.unlabeled_seconds / len(speakers)
    total = 0.0
    speaker_lines: list[str] = []
    for k, spk in enumerate(speakers):
        _, done = writer.speaker(spk, (k + 1) * share - total)
        total += done
        speaker_lines.append(_speaker_line(spk, writer.part, done))
    writer.bar.close()
    return speaker_lines


def _speaker_line(spk: Speaker, part: str, seconds: float) -> str:
    return (f"{spk.id:<5}| {spk.sex} | {part:<16} | {seconds / 60:6.2f} | espeak-ng {spk.voice} "
            f"pitch {spk.pitch} rate {spk.rate}")


def _speakers_file(root: Path, layout: str) -> Path:
    return root / ("SPEAKERS.TXT" if layout == "librispeech" else "speakers.txt")


def _add_unlabeled(root: Path, spec: CorpusSpec, progress: bool) -> Path:
    """Synthesise the unlabelled part of ``spec`` beside the labelled corpus at ``root``.

    The part is written aside and moved in, then the speaker list and the fingerprint are replaced
    (each by a rename): an interrupted addition leaves the labelled corpus as it was, and a rerun
    redoes the addition (the part directory of an interrupted one is removed first).
    """
    tmp = root.parent / f".{root.name}.unlabeled.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    lines = _synth_unlabeled(tmp, spec, progress)
    rel = Path(UNLABELED_PART) if spec.layout == "librispeech" else Path("wav") / UNLABELED_PART
    if (root / rel).exists():
        shutil.rmtree(root / rel)
    (tmp / rel).rename(root / rel)
    speakers = _speakers_file(root, spec.layout)
    kept = [line for line in speakers.read_text(encoding="utf-8").splitlines()
            if line.split("|")[2:3] != [f" {UNLABELED_PART:<16} "]]
    atomic_write_text(speakers, "\n".join(kept + lines) + "\n")
    atomic_write_text(root / FINGERPRINT, json.dumps(_fingerprint(spec), indent=1) + "\n")
    shutil.rmtree(tmp)
    logging.info(f"added {spec.unlabeled_seconds / 60:.1f} min of unlabelled speech to {root}")
    return root


def make_corpus(out_dir: str | Path, spec: CorpusSpec, progress: bool = True) -> Path:
    """Write the corpus described by ``spec`` under ``out_dir``; returns the corpus root.

    ``out_dir/LibriSpeech`` or ``out_dir/data_aishell`` (the directories lhotse's recipes take),
    with an ``unlabeled`` part (audio only) when ``spec.unlabeled_seconds`` > 0.
    Reruns with the same spec return at once; the same corpus without its unlabelled part gets the
    part added (the result is byte-identical to making both at once); any other corpus already
    there raises :class:`CorpusExistsError` and is left untouched.
    """
    out_dir = Path(out_dir)
    root = corpus_root(out_dir, spec.layout)
    want = _fingerprint(spec)
    if root.exists():
        have = _existing(root)
        if have == want:
            logging.info(f"{root} already holds this corpus (seed {spec.seed}); nothing to do")
            return root
        if spec.unlabeled_seconds and have == _fingerprint(replace(spec, unlabeled_seconds=0.0, unlabeled_speakers=0)):
            return _add_unlabeled(root, spec, progress)
        what = "a corpus not made by w2v-k2" if have is None else f"another synthetic corpus ({have})"
        raise CorpusExistsError(
            f"{root} already holds {what}; refusing to overwrite it. "
            f"Choose another --out or remove {root} yourself."
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{root.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    parts = LIBRISPEECH_PARTS if spec.layout == "librispeech" else AISHELL_PARTS
    done = [_synth_part(tmp, spec, p, progress) for p in range(len(parts))]
    transcript_lines = [line for t, _ in done for line in t]
    speaker_lines = [line for _, spk in done for line in spk]
    if spec.unlabeled_seconds:
        speaker_lines += _synth_unlabeled(tmp, spec, progress)
    if spec.layout == "librispeech":
        _speakers_file(tmp, spec.layout).write_text(
            "; synthetic speakers (espeak-ng voices)\n;ID  |SEX| SUBSET           |MINUTES| NAME\n"
            + "\n".join(speaker_lines) + "\n",
            encoding="utf-8",
        )
    else:
        tdir = tmp / "transcript"
        tdir.mkdir(parents=True, exist_ok=True)
        (tdir / "aishell_transcript_v0.8.txt").write_text(
            "\n".join(sorted(transcript_lines)) + "\n", encoding="utf-8"
        )
        _speakers_file(tmp, spec.layout).write_text("\n".join(speaker_lines) + "\n", encoding="utf-8")
    (tmp / FINGERPRINT).write_text(json.dumps(want, indent=1) + "\n")
    tmp.rename(root)
    unlabeled = f" (+ {spec.unlabeled_seconds / 60:.1f} min unlabelled)" if spec.unlabeled_seconds else ""
    logging.info(f"wrote {sum(spec.seconds) / 60:.1f} min{unlabeled} of {spec.layout}-layout speech to {root}")
    return root
