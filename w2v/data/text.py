"""Transcript text: Mandarin normalisation and modelling units, and the synthetic corpora's sentences.

Mandarin (AISHELL convention). One normal form, used by corpus preparation, the exported LM text,
the character lexicon and the CTC training targets, so that all four agree on every unit:

- full-width forms become half-width (NFKC: ``ＫＴＶ`` → ``KTV``, ideographic space → space),
- Latin letters are upper-cased,
- punctuation and symbols (Chinese and ASCII) are removed; they separate words,
- words stay separated by single spaces (the corpus's segmentation),
- the modelling units are each CJK character (any wide character) alone and each run of Latin
  letters and digits whole (``KTV`` is one unit, ``IT'S`` too).

:func:`normalize_mandarin` gives the words, :func:`mandarin_text` the supervision text (word
spaces dropped except between two Latin runs, so ``HELLO WORLD`` stays two units) and
:func:`mandarin_units` the units of either.

Synthetic corpora: a small probabilistic grammar per language: a few hundred words, nested
phrases, agreement (singular/plural nouns with counted numbers), so that a BPE model, an n-gram LM
and a lexicon all have something real to learn, and test sentences are mostly unseen in training.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from typing import Callable, Sequence

# ---------------------------------------------------------------------------------- normalisation
_APOSTROPHE = "'"
_TYPOGRAPHIC_APOSTROPHES = str.maketrans({"\u2019": _APOSTROPHE, "\u02bc": _APOSTROPHE})  # ’ ʼ (NFKC keeps them)


def _is_run_char(ch: str) -> bool:
    """A letter or digit of a narrow script (Latin, digits): it joins its neighbours in one unit.

    Wide characters (CJK ideographs, kana, hangul) are units by themselves.
    """
    return ch.isalnum() and unicodedata.east_asian_width(ch) not in ("W", "F")


def _is_separator(ch: str) -> bool:
    """Whitespace, punctuation, symbols and control characters: never part of a unit."""
    return ch.isspace() or unicodedata.category(ch)[0] in "PSZC"


def normalize_mandarin(text: str) -> str:
    """A Mandarin transcript in normal form: its words, separated by single spaces.

    ``"我喜欢ｋｔｖ，你呢？"`` → ``"我喜欢KTV 你呢"``; ``"我 喜欢 KTV"`` is already normal.
    """
    text = unicodedata.normalize("NFKC", text).translate(_TYPOGRAPHIC_APOSTROPHES).upper()
    chars = list(text)
    for i, ch in enumerate(chars):
        if ch == _APOSTROPHE and 0 < i < len(chars) - 1 and _is_run_char(chars[i - 1]) and _is_run_char(chars[i + 1]):
            continue  # IT'S: an apostrophe inside a Latin word belongs to it
        if _is_separator(ch):
            chars[i] = " "
    return " ".join("".join(chars).split())


def mandarin_units(text: str) -> list[str]:
    """The modelling units of ``text``, normalised first (:func:`normalize_mandarin`).

    ``"好的OK吗"`` → ``["好", "的", "OK", "吗"]``; ``"卡拉 ｏｋ，KTV"`` → ``["卡", "拉", "OK", "KTV"]``.
    """
    return [u for word in normalize_mandarin(text).split() for u in split_units(word)]


def split_units(word: str) -> list[str]:
    """The units of one word as written (no normalisation): Latin runs whole, other characters alone.

    ``"好的OK吗"`` → ``["好", "的", "OK", "吗"]``. On a normalised word this is the unit rule of
    :func:`mandarin_units`.
    """
    units: list[str] = []
    run = ""
    for ch in word:
        if _is_run_char(ch) or (ch == _APOSTROPHE and run):
            run += ch
            continue
        if run:
            units.append(run)
            run = ""
        if not ch.isspace():
            units.append(ch)
    if run:
        units.append(run)
    return units


def mandarin_text(text: str) -> str:
    """Supervision text: normalised, word spaces dropped except between two Latin runs.

    ``"我 喜欢 KTV 和 OK"`` → ``"我喜欢KTV和OK"``; ``"HELLO WORLD 你好"`` → ``"HELLO WORLD你好"``.
    Its units (:func:`mandarin_units`) are those of the words it came from.
    """
    return join_units(normalize_mandarin(text).split())


def join_units(units: Sequence[str]) -> str:
    """Units or words → text without spaces, except between two Latin runs (``HELLO WORLD``)."""
    out = ""
    for unit in units:
        if out and unit and _is_run_char(out[-1]) and _is_run_char(unit[0]):
            out += " "
        out += unit
    return out


# ---------------------------------------------------------------------------------- English
_EN = {
    "noun": (
        "BOY GIRL MAN WOMAN CHILD DOCTOR TEACHER FARMER SAILOR SOLDIER KING QUEEN PRINCE "
        "CAPTAIN MERCHANT PRIEST STRANGER NEIGHBOUR FRIEND MOTHER FATHER SISTER BROTHER DOG CAT "
        "HORSE BIRD WOLF FOX BEAR MOUSE RABBIT LETTER BOOK SWORD LAMP CHAIR TABLE BASKET BOAT "
        "WAGON GARDEN FOREST RIVER MOUNTAIN VILLAGE CASTLE CHURCH TOWER BRIDGE ROAD HOUSE ROOM "
        "WINDOW DOOR FIRE STONE TREE FLOWER APPLE BREAD COIN RING CLOCK SHIP"
    ).split(),
    "adj": (
        "OLD YOUNG LITTLE GREAT TALL SMALL DARK BRIGHT QUIET ANGRY HAPPY TIRED BRAVE CLEVER "
        "POOR RICH STRANGE GENTLE HEAVY EMPTY GOLDEN SILVER WOODEN BROKEN HIDDEN DISTANT "
        "WHITE BLACK GREEN RED BLUE COLD WARM WILD"
    ).split(),
    "verb_t": (
        "SAW FOUND TOOK CARRIED OPENED CLOSED FOLLOWED WATCHED CALLED HELPED LEFT BROUGHT "
        "BOUGHT SOLD PAINTED BUILT MET VISITED REMEMBERED FORGOT WANTED LOVED FEARED "
        "ANSWERED THANKED PUSHED PULLED DROPPED LIFTED CAUGHT"
    ).split(),
    "verb_i": (
        "SLEPT LAUGHED WAITED SMILED RAN WALKED ARRIVED SPOKE LISTENED CRIED SANG DANCED "
        "STOPPED WORKED RESTED PRAYED SHOUTED TREMBLED"
    ).split(),
    "verb_s": "SAID THOUGHT KNEW BELIEVED HOPED FEARED DREAMED REMEMBERED".split(),
    "adv": (
        "SLOWLY QUICKLY QUIETLY SUDDENLY SOFTLY GLADLY SADLY CAREFULLY OFTEN AGAIN TOGETHER "
        "ALONE EARLY LATE"
    ).split(),
    "prep": "IN ON NEAR UNDER BEHIND BESIDE ACROSS THROUGH TOWARD INTO FROM WITH".split(),
    "name": (
        "JOHN MARY HENRY ALICE THOMAS MARGARET WILLIAM ELIZABETH ROBERT ANNE JAMES CATHERINE "
        "EDWARD SARAH GEORGE EMMA PETER LUCY ARTHUR HELEN"
    ).split(),
    "time": [
        "YESTERDAY", "TODAY", "TONIGHT", "AT DAWN", "AT NOON", "IN THE MORNING", "IN THE EVENING",
        "AFTER SUPPER", "BEFORE THE STORM", "ON SUNDAY", "ON MONDAY", "IN WINTER", "IN SUMMER",
    ],
    "number": "TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN TWELVE TWENTY".split(),
}
_EN_PLURAL = {
    "MAN": "MEN", "WOMAN": "WOMEN", "CHILD": "CHILDREN", "MOUSE": "MICE", "WOLF": "WOLVES",
    "FOX": "FOXES", "BOX": "BOXES", "CHURCH": "CHURCHES", "SHIP": "SHIPS", "FARMER": "FARMERS",
}


def _plural(noun: str) -> str:
    if noun in _EN_PLURAL:
        return _EN_PLURAL[noun]
    if noun.endswith("Y") and noun[-2] not in "AEIOU":
        return noun[:-1] + "IES"
    if noun.endswith(("S", "SH", "CH", "X")):
        return noun + "ES"
    return noun + "S"


def _en_np(r: random.Random, depth: int) -> str:
    u = r.random()
    if u < 0.15:
        return r.choice(_EN["name"])
    if u < 0.25:
        return f"{r.choice(_EN['number'])} {_plural(r.choice(_EN['noun']))}"
    det = r.choice(["THE", "THE", "A", "HIS", "HER", "THEIR", "EVERY", "THAT"])
    adj = f"{r.choice(_EN['adj'])} " if r.random() < 0.45 else ""
    noun = r.choice(_EN["noun"])
    if det == "A" and (adj or noun)[0] in "AEIOU":
        det = "AN"
    np_ = f"{det} {adj}{noun}"
    if depth < 2 and r.random() < 0.2:
        np_ += f" {_en_pp(r, depth + 1)}"
    return np_


def _en_pp(r: random.Random, depth: int) -> str:
    return f"{r.choice(_EN['prep'])} {_en_np(r, depth)}"


def _en_vp(r: random.Random, depth: int) -> str:
    u = r.random()
    if u < 0.5:
        vp = f"{r.choice(_EN['verb_t'])} {_en_np(r, depth + 1)}"
    elif u < 0.8 or depth >= 1:
        vp = r.choice(_EN["verb_i"])
        if r.random() < 0.5:
            vp += f" {r.choice(_EN['adv'])}"
    else:
        vp = f"{r.choice(_EN['verb_s'])} THAT {_en_clause(r, depth + 1)}"
    if depth < 2 and r.random() < 0.35:
        vp += f" {_en_pp(r, depth + 1)}"
    return vp


def _en_clause(r: random.Random, depth: int = 0) -> str:
    return f"{_en_np(r, depth)} {_en_vp(r, depth)}"


def english_sentence(r: random.Random) -> str:
    """One upper-case English sentence (LibriSpeech transcript style, no punctuation)."""
    u = r.random()
    s = _en_clause(r)
    if u < 0.2:
        s = f"{r.choice(_EN['time'])} {s}"
    elif u < 0.35:
        s = f"{s} AND {_en_clause(r, 1)}"
    elif u < 0.45:
        s = f"{s} BUT {_en_clause(r, 1)}"
    return s


# ---------------------------------------------------------------------------------- Mandarin
_ZH = {
    "person": (
        "我 你 他 她 我们 他们 老师 学生 医生 朋友 妈妈 爸爸 哥哥 姐姐 弟弟 妹妹 孩子 "
        "同学 经理 司机 邻居 客人 警察 工人"
    ).split(),
    "time": "今天 明天 昨天 早上 晚上 下午 周末 去年 现在 以后".split(),
    "place": "北京 上海 学校 公园 医院 商店 银行 饭店 图书馆 火车站 机场 公司 家里 超市 电影院".split(),
    "obj": (
        "电影 书 报纸 电脑 手机 水果 苹果 米饭 面条 咖啡 茶 衣服 礼物 自行车 汽车 房子 "
        "问题 作业 音乐 电视 照片 信"
    ).split(),
    "verb": "看 买 喜欢 需要 找到 带 送 吃 喝 写 听 卖 准备 打扫 修理".split(),
    "verb_i": "休息 工作 睡觉 唱歌 跳舞 学习 上课 散步 开会 跑步".split(),
    "adv": "已经 常常 马上 一起 也 都 还".split(),
    "adj": "很 非常 特别 有点".split(),
    "quality": "高兴 忙 累 漂亮 便宜 贵 好 热 冷 安静 干净 重要".split(),
    "number": "一 两 三 四 五 六 七 八 九 十".split(),
    "measure": "个 本 杯 件 张 辆".split(),
    "say": "说 觉得 知道 希望 认为".split(),
}


def _zh_obj(r: random.Random) -> str:
    if r.random() < 0.35:
        return f"{r.choice(_ZH['number'])} {r.choice(_ZH['measure'])} {r.choice(_ZH['obj'])}"
    return r.choice(_ZH["obj"])


def _zh_clause(r: random.Random, depth: int = 0) -> str:
    subj = r.choice(_ZH["person"])
    u = r.random()
    adv = f"{r.choice(_ZH['adv'])} " if r.random() < 0.3 else ""
    if u < 0.35:
        return f"{subj} {adv}{r.choice(_ZH['verb'])} {_zh_obj(r)}"
    if u < 0.6:
        return f"{subj} {adv}在 {r.choice(_ZH['place'])} {r.choice(_ZH['verb_i'])}"
    if u < 0.75:
        return f"{subj} {adv}去 {r.choice(_ZH['place'])} {r.choice(_ZH['verb'])} {_zh_obj(r)}"
    if u < 0.9 or depth > 0:
        return f"{subj} {r.choice(_ZH['adj'])} {r.choice(_ZH['quality'])}"
    return f"{subj} {r.choice(_ZH['say'])} {_zh_clause(r, depth + 1)}"


def mandarin_sentence(r: random.Random) -> str:
    """One word-segmented Mandarin sentence (AISHELL transcript style: words separated by spaces)."""
    s = _zh_clause(r)
    u = r.random()
    if u < 0.3:
        s = f"{r.choice(_ZH['time'])} {s}"
    elif u < 0.4:
        s = f"{s} 但是 {_zh_clause(r, 1)}"
    elif u < 0.5:
        s = f"{s} 所以 {_zh_clause(r, 1)}"
    return s


# espeak-ng voice variants whose output is reproducible (f2, f3, f5 add random breath noise).
_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m7", "f1", "f4", "linda", "belinda", "aunty", "anika",
             "adam", "john", "grandpa", "edward", "max")


@dataclass(frozen=True)
class Language:
    name: str
    sentence: Callable[[random.Random], str]
    # espeak-ng voice names: base language plus a "+variant" per speaker.
    voices: tuple[str, ...]
    variants: tuple[str, ...]


LANGUAGES = {
    "english": Language(
        "english",
        english_sentence,
        voices=("en-us", "en", "en-gb-scotland", "en-029"),
        variants=_VARIANTS,
    ),
    "mandarin": Language(
        "mandarin",
        mandarin_sentence,
        voices=("cmn",),
        variants=_VARIANTS,
    ),
}


def vocabulary(language: str) -> set[str]:
    """Every word the grammar of ``language`` can produce (for tests and lexicon sizes)."""
    table = _EN if language == "english" else _ZH
    words = {w for ws in table.values() for entry in ws for w in entry.split()}
    if language == "english":
        words |= {_plural(n) for n in _EN["noun"]}
        words |= {"THE", "A", "AN", "HIS", "HER", "THEIR", "EVERY", "THAT", "AND", "BUT"}
    else:
        words |= {"在", "去", "但是", "所以"}
    return words
