"""Synthetic speech corpora in the exact on-disk layouts of LibriSpeech and AISHELL-1.

Speech comes from espeak-ng as shipped inside the ``espeakng-loader`` wheel (no system package).
Each speaker is a distinct voice (accent x voice variant x base pitch x base rate); every utterance
jitters rate and pitch and gets a little white noise. Everything is a pure function of ``seed``.

The corpus is built under a temporary name beside its destination and renamed when complete, with
a fingerprint (``.w2v-synth.json``) so a rerun recognises its own corpus and never overwrites a
different one.
"""

from __future__ import annotations

import ctypes
import json
import zlib
import logging
import random
import shutil
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio
from tqdm import tqdm

from w2v.data.text import LANGUAGES
from w2v.runtime import SAMPLE_RATE

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
# Speaker ids of the real AISHELL-1 parts, so prefixes look familiar.
_AISHELL_FIRST_SPEAKER = {"train": 2, "dev": 724, "test": 764}


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


def make_spec(layout: str, size: str = "mini", seed: int = 0, minutes: float | None = None) -> CorpusSpec:
    """Resolve a named ``size`` (or ``minutes`` of speech in all) into a full spec."""
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
    return CorpusSpec(layout=layout, seed=seed, seconds=seconds, speakers_per_part=spk)


def _speakers(spec: CorpusSpec, part_index: int, rng: random.Random) -> list[Speaker]:
    lang = LANGUAGES[LAYOUTS[spec.layout]]
    out = []
    for i in range(spec.speakers_per_part[part_index]):
        variant = rng.choice(lang.variants)
        sex = "F" if variant.startswith("f") or variant in ("linda", "belinda", "aunty", "anika") else "M"
        if spec.layout == "librispeech":
            sid = 100 + 37 * (part_index * 1000 + i) + rng.randrange(30)
        else:
            sid = _AISHELL_FIRST_SPEAKER[AISHELL_PARTS[part_index]] + i
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


def _sentences(spec: CorpusSpec, part_index: int, rng: random.Random):
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


def _synth_part(tmp: Path, spec: CorpusSpec, p: int, progress: bool) -> tuple[list[str], list[str]]:
    """Synthesise part ``p`` under ``tmp``; returns (AISHELL transcript lines, speaker lines)."""
    espeak = Espeak()
    part = (LIBRISPEECH_PARTS if spec.layout == "librispeech" else AISHELL_PARTS)[p]
    part_rng = random.Random(f"{spec.seed}/{spec.layout}/{part}")
    speakers = _speakers(spec, p, part_rng)
    sentences = _sentences(spec, p, part_rng)
    per_speaker = spec.seconds[p] / len(speakers)
    transcript_lines: list[str] = []
    speaker_lines: list[str] = []
    bar = tqdm(total=round(spec.seconds[p]), unit="s", desc=f"synthesising {spec.layout} {part}",
               disable=not progress, mininterval=5)
    for spk in speakers:
        done, utt = 0.0, 0
        chapter = 1000 + part_rng.randrange(9000)
        by_chapter: dict[int, list[str]] = {}
        while done < per_speaker:
            text = next(sentences)
            wav = _render(espeak, text, spk, part_rng, spec.snr_db)
            if spec.layout == "librispeech":
                if utt and utt % 40 == 0:  # a new chapter every 40 utterances, like books
                    chapter += 1
                uid = f"{spk.id}-{chapter}-{utt:04d}"
                d = tmp / part / str(spk.id) / str(chapter)
                d.mkdir(parents=True, exist_ok=True)
                sf.write(d / f"{uid}.flac", wav, SAMPLE_RATE, subtype="PCM_16")
                by_chapter.setdefault(chapter, []).append(f"{uid} {text}")
            else:
                uid = f"BAC009S{spk.id:04d}W{utt + 121:04d}"
                d = tmp / "wav" / part / f"S{spk.id:04d}"
                d.mkdir(parents=True, exist_ok=True)
                sf.write(d / f"{uid}.wav", wav, SAMPLE_RATE, subtype="PCM_16")
                transcript_lines.append(f"{uid} {text}")
            dur = wav.shape[0] / SAMPLE_RATE
            done += dur
            bar.update(dur)
            utt += 1
        for ch, lines in by_chapter.items():
            trans = tmp / part / str(spk.id) / str(ch) / f"{spk.id}-{ch}.trans.txt"
            trans.write_text("\n".join(lines) + "\n", encoding="utf-8")
        speaker_lines.append(
            f"{spk.id:<5}| {spk.sex} | {part:<16} | {done / 60:6.2f} | espeak-ng {spk.voice} "
            f"pitch {spk.pitch} rate {spk.rate}"
        )
    bar.close()
    return transcript_lines, speaker_lines


def make_corpus(out_dir: str | Path, spec: CorpusSpec, progress: bool = True) -> Path:
    """Write the corpus described by ``spec`` under ``out_dir``; returns the corpus root.

    ``out_dir/LibriSpeech`` or ``out_dir/data_aishell`` (the directories lhotse's recipes take).
    Reruns with the same spec return at once; a different corpus already there raises
    :class:`CorpusExistsError` and is left untouched.
    """
    out_dir = Path(out_dir)
    root = corpus_root(out_dir, spec.layout)
    want = json.loads(json.dumps(asdict(spec)))
    if root.exists():
        have = _existing(root)
        if have == want:
            logging.info(f"{root} already holds this corpus (seed {spec.seed}); nothing to do")
            return root
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
    if spec.layout == "librispeech":
        (tmp / "SPEAKERS.TXT").write_text(
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
        (tmp / "speakers.txt").write_text("\n".join(speaker_lines) + "\n", encoding="utf-8")
    (tmp / FINGERPRINT).write_text(json.dumps(want, indent=1) + "\n")
    tmp.rename(root)
    logging.info(f"wrote {sum(spec.seconds) / 60:.1f} min of {spec.layout}-layout speech to {root}")
    return root
