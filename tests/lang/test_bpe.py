import pytest

from tests.helpers import TOY_SENTENCES as SENTENCES
from w2v.lang.bpe import load_bpe, train_bpe


@pytest.fixture(scope="module")
def sp(tmp_path_factory):
    d = tmp_path_factory.mktemp("bpe")
    (d / "transcripts.txt").write_text("\n".join(SENTENCES) + "\n")
    return load_bpe(train_bpe(d / "transcripts.txt", d / "bpe.model", vocab_size=30))


def test_special_ids(sp):
    assert sp.get_piece_size() == 30
    assert [sp.id_to_piece(i) for i in range(3)] == ["<blk>", "<sos/eos>", "<unk>"]
    assert sp.unk_id() == 2


@pytest.mark.parametrize("text", sorted(set(SENTENCES)) + ["DOG CAT", "GREENPARK"])
def test_round_trip(sp, text):
    ids = sp.encode(text)
    assert 0 not in ids and 1 not in ids and 2 not in ids  # in-alphabet text needs no <unk>
    assert sp.decode(ids) == text


def test_unknown_characters_map_to_unk(sp):
    assert 2 in sp.encode("QXZ")


def test_vocab_too_large_raises(tmp_path):
    (tmp_path / "t.txt").write_text("A B\n")
    with pytest.raises(ValueError, match="vocab-size"):
        train_bpe(tmp_path / "t.txt", tmp_path / "bpe.model", vocab_size=500)
    assert not (tmp_path / "bpe.model").exists()


def test_bad_model_type(tmp_path):
    with pytest.raises(ValueError):
        train_bpe(tmp_path / "t.txt", tmp_path / "bpe.model", 30, model_type="word")
