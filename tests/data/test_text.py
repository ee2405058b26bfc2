"""Mandarin text normalisation: one normal form and one unit rule (w2v.data.text)."""

import pytest

from w2v.data.text import join_units, mandarin_text, mandarin_units, normalize_mandarin, split_units


@pytest.mark.parametrize("raw, words", [
    ("我 喜欢 KTV", "我 喜欢 KTV"),  # already normal
    ("我喜欢ｋｔｖ，你呢？", "我喜欢KTV 你呢"),  # full-width letters, Chinese punctuation
    ("　我们\t去  北京。 ", "我们 去 北京"),  # ideographic space, tabs, runs of spaces
    ("“你好！”他说：好的。", "你好 他说 好的"),
    ("hello, world!", "HELLO WORLD"),  # ASCII punctuation, upper case
    ("ＭＰ３ 播放器", "MP3 播放器"),  # full-width digit
    ("it’s 好", "IT'S 好"),  # an apostrophe inside a Latin word stays, typographic or not
    ("'A' 好", "A 好"),  # quotes around it do not
    ("U.S.A 大选", "U S A 大选"),
    ("《三体》—刘慈欣…", "三体 刘慈欣"),
    ("，。！", ""),
])
def test_normalize_mandarin(raw, words):
    assert normalize_mandarin(raw) == words
    assert normalize_mandarin(words) == words  # idempotent


def test_units_keep_latin_runs_whole():
    assert mandarin_units("我 喜欢 KTV") == ["我", "喜", "欢", "KTV"]
    assert mandarin_units("卡拉ｏｋ，很好") == ["卡", "拉", "OK", "很", "好"]
    assert mandarin_units("HELLO WORLD 你好") == ["HELLO", "WORLD", "你", "好"]
    assert mandarin_units("3D打印机") == ["3D", "打", "印", "机"]
    assert mandarin_units("") == []
    # as written, without normalisation (the scorer's and wenet export's view)
    assert split_units("好的OK吗") == ["好", "的", "OK", "吗"]
    assert split_units("a好b") == ["a", "好", "b"]


def test_supervision_text_keeps_spaces_only_between_latin_runs():
    assert mandarin_text("我 喜欢 KTV 和 ok 吧") == "我喜欢KTV和OK吧"
    assert mandarin_text("HELLO WORLD 你好") == "HELLO WORLD你好"
    assert mandarin_text("ｉ ｐｈｏｎｅ，很好") == "I PHONE很好"
    for words in ("我 喜欢 KTV", "HELLO WORLD 你好", "卡拉 OK 和 K 歌", "A B C"):
        # the text without word boundaries has the units of the words it came from
        assert mandarin_units(mandarin_text(words)) == mandarin_units(words)
        assert join_units(mandarin_units(words)) == mandarin_text(words)
