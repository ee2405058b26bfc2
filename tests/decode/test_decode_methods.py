import pytest
import torch

from w2v.decode.ctc import (
    METHODS,
    SearchOptions,
    TokenDecoder,
    ctc_greedy_search,
    decode_log_probs,
    load_graphs,
)
from tests.helpers import TOY_SENTENCES as SENTENCES
from tests.helpers import peaky_log_probs
from w2v.lang.bpe import load_bpe
from w2v.lang.lexicon import read_lexicon
from w2v.lang.symbols import max_token_id, read_symbol_table
from tests.helpers import build_lang_and_graphs

OPTS = SearchOptions(lm_scales=(0.5, 1.0), num_paths=20)


@pytest.fixture(scope="module")
def lang(tmp_path_factory):
    lang_dir, lm_dir = build_lang_and_graphs(tmp_path_factory.mktemp("dec"), SENTENCES, vocab_size=30)
    graphs = load_graphs(lang_dir, METHODS, lm_dir)
    return lang_dir, lm_dir, graphs


def _token_ids(lang_dir, sentences):
    sp = load_bpe(lang_dir / "bpe.model")
    return [sp.encode(s) for s in sentences]


def test_greedy_hand_made():
    frames = [[0, 1, 1, 0, 2, 2, 2, 0, 0, 2, 3, 3], [4, 4, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0]]
    log_probs = torch.full((2, 12, 5), -10.0)
    for b, seq in enumerate(frames):
        for t, k in enumerate(seq):
            log_probs[b, t, k] = -0.01
    lengths = torch.tensor([12, 4])
    assert ctc_greedy_search(log_probs, lengths) == [[1, 2, 2, 3], [4, 4]]
    # frames past the length never count
    assert ctc_greedy_search(log_probs, torch.tensor([3, 5])) == [[1], [4, 4, 1]]


def test_greedy_zero_length():
    assert ctc_greedy_search(torch.zeros(1, 3, 4).log_softmax(-1), torch.tensor([0])) == [[]]


def test_bad_shapes_raise(lang):
    _, _, graphs = lang
    with pytest.raises(ValueError, match=r"\[B, T, V\]"):
        decode_log_probs(torch.zeros(3, 4), torch.tensor([3]), ["1best"], graphs)
    with pytest.raises(ValueError, match="exceed"):
        decode_log_probs(torch.zeros(1, 4, 30), torch.tensor([9]), ["1best"], graphs)
    with pytest.raises(ValueError, match="unknown"):
        decode_log_probs(torch.zeros(1, 4, 30), torch.tensor([4]), ["beam"], graphs)


def test_token_decoder_chars():
    dec = TokenDecoder(["<blk>", "<sos/eos>", "<unk>", "你", "好"])
    assert dec.words([3, 4, 0, 3]) == ["你好你"]
    assert dec.words([]) == []


# Lengths differ on purpose: k2 needs segments sorted by length, hypotheses must come back in
# input order. The last sentence is not in the training text but all its words are.
TEST = ["THE DOG SAT ON THE MAT", "A CAT", "THEY SAW THE RED PARK AND THE GREEN MAT", "THE CAT"]


@pytest.mark.parametrize("method", METHODS)
def test_peaky_output_decodes_to_its_words(lang, method):
    lang_dir, _, graphs = lang
    log_probs, lengths = peaky_log_probs(_token_ids(lang_dir, TEST), 30, noise=0.5)
    hyps = decode_log_probs(log_probs, lengths, [method], graphs, OPTS)[method]
    expected_keys = {"lm_scale_0.5", "lm_scale_1.0"} if "rescoring" in method or method == "1best" else {method}
    assert set(hyps) == expected_keys
    for key, h in hyps.items():
        assert h == [s.split() for s in TEST], key


def test_noisy_output_lexicon_repairs(lang):
    # Heavy noise breaks the greedy output; the HLG search still recovers the words.
    lang_dir, _, graphs = lang
    log_probs, lengths = peaky_log_probs(_token_ids(lang_dir, TEST), 30, peak=5.0, noise=1.5, seed=1)
    hyps = decode_log_probs(log_probs, lengths, ["ctc-greedy-search", "1best"], graphs, OPTS)
    refs = [s.split() for s in TEST]
    greedy_ok = sum(h == r for h, r in zip(hyps["ctc-greedy-search"]["ctc-greedy-search"], refs))
    hlg_ok = sum(h == r for h, r in zip(hyps["1best"]["lm_scale_1.0"], refs))
    assert hlg_ok == len(refs)
    assert greedy_ok <= 1


def test_oov_word_does_not_crash(lang):
    lang_dir, _, graphs = lang
    words = read_symbol_table(lang_dir / "words.txt")
    assert "GRASS" not in words
    sent = ["THE CAT SAT ON THE GRASS"]
    log_probs, lengths = peaky_log_probs(_token_ids(lang_dir, sent), 30, noise=0.3)
    hyps = decode_log_probs(log_probs, lengths, METHODS, graphs, OPTS)
    assert hyps["ctc-greedy-search"]["ctc-greedy-search"] == [sent[0].split()]  # spelled out
    for method in ("1best", "nbest", "whole-lattice-rescoring"):
        for h in hyps[method].values():
            assert h[0][:5] == ["THE", "CAT", "SAT", "ON", "THE"]
            assert "GRASS" not in h[0]
            assert all(w in words for w in h[0])


def test_lexicon_words_all_decodable(lang):
    # every word of the lexicon alone, in one batch
    lang_dir, _, graphs = lang
    lexicon = [w for w, _ in read_lexicon(lang_dir / "lexicon.txt") if w != "<UNK>"]
    log_probs, lengths = peaky_log_probs(_token_ids(lang_dir, lexicon), 30, noise=0.3)
    hyps = decode_log_probs(log_probs, lengths, ["1best"], graphs, OPTS)["1best"]["lm_scale_1.0"]
    assert hyps == [[w] for w in lexicon]


def test_skip_blank_frames_keeps_one_per_run():
    from w2v.decode.ctc import skip_blank_frames

    # frames: b b A b b b A A b  (b = confident blank); second utterance shorter
    seq = [0, 0, 1, 0, 0, 0, 1, 1, 0]
    log_probs = torch.full((2, 9, 3), -20.0)
    for t, k in enumerate(seq):
        log_probs[0, t, k] = 0.0
        log_probs[1, t, k] = 0.0
    out, lengths = skip_blank_frames(log_probs, torch.tensor([9, 4]), 0.999)
    assert lengths.tolist() == [6, 3]
    assert out[0, :6].argmax(-1).tolist() == [0, 1, 0, 1, 1, 0]
    assert out[1, :3].argmax(-1).tolist() == [0, 1, 0]
    with pytest.raises(ValueError):
        skip_blank_frames(log_probs, torch.tensor([9, 4]), 1.5)


def test_blank_skipping_same_words(lang):
    lang_dir, _, graphs = lang
    log_probs, lengths = peaky_log_probs(_token_ids(lang_dir, TEST), 30, blanks_between=4, noise=0.3)
    opts = SearchOptions(blank_skip_threshold=0.99)
    hyps = decode_log_probs(log_probs, lengths, ["ctc-decoding", "1best"], graphs, opts)
    assert hyps["1best"]["lm_scale_1.0"] == [s.split() for s in TEST]
    assert hyps["ctc-decoding"]["ctc-decoding"] == [s.split() for s in TEST]


def test_mandarin_char_graph(tmp_path):
    sentences = ["我们 去 北京", "北京 很 大", "我 去 上海", "上海 很 大", "我们 很 好"] * 3
    lang_dir, lm_dir = build_lang_and_graphs(tmp_path, sentences, token_type="char")
    graphs = load_graphs(lang_dir, ["ctc-greedy-search", "1best", "whole-lattice-rescoring"], lm_dir)
    tokens = read_symbol_table(lang_dir / "tokens.txt")
    test = ["我 去 北京", "上海 很 好"]
    ids = [[tokens[c] for c in s.replace(" ", "")] for s in test]
    log_probs, lengths = peaky_log_probs(ids, max_token_id(tokens) + 1, noise=0.3)
    opts = SearchOptions(lm_scales=(0.7,))
    hyps = decode_log_probs(log_probs, lengths, ["ctc-greedy-search", "1best", "whole-lattice-rescoring"],
                            graphs, opts)
    assert hyps["1best"]["lm_scale_1.0"] == [s.split() for s in test]
    assert hyps["whole-lattice-rescoring"]["lm_scale_0.7"] == [s.split() for s in test]
    # greedy has no word boundaries: one string of characters per utterance
    assert hyps["ctc-greedy-search"]["ctc-greedy-search"] == [["我去北京"], ["上海很好"]]


def test_zero_length_utterance_in_batch(lang):
    lang_dir, _, graphs = lang
    log_probs, lengths = peaky_log_probs(_token_ids(lang_dir, ["THE CAT", "A DOG"]), 30, noise=0.3)
    lengths[1] = 0
    hyps = decode_log_probs(log_probs, lengths, METHODS, graphs, OPTS)
    for method, per_key in hyps.items():
        for key, h in per_key.items():
            assert h == [["THE", "CAT"], []], (method, key)


def test_path_labels_ragged_aux():
    import k2

    from w2v.decode.ctc import path_labels

    fsa = k2.linear_fsa([[1, 2, 3]])
    fsa.aux_labels = k2.RaggedTensor([[5, 6], [0], [7], [-1]])
    assert path_labels(fsa) == [[5, 6, 7]]


@pytest.mark.parametrize("method", ["nbest-rescoring", "whole-lattice-rescoring"])
def test_lm_scale_trades_acoustics_for_lm(lang, method):
    # Acoustics prefer PARK over MAT by 1 nat at the last word; the LM has only seen
    # "SAT ON THE MAT". A tiny lm_scale follows the acoustics, lm_scale 1 the LM.
    lang_dir, _, graphs = lang
    tokens = read_symbol_table(lang_dir / "tokens.txt")
    sent = "THE CAT SAT ON THE MAT"
    log_probs, lengths = peaky_log_probs(_token_ids(lang_dir, [sent]), 30, peak=20.0, noise=0.0)
    mat, park = tokens["▁MAT"], tokens["▁PARK"]
    frames = (log_probs[0, : lengths[0]].argmax(-1) == mat).nonzero().flatten()
    assert len(frames) > 0
    logits = log_probs.clone()
    logits[0, frames, park] = logits[0, frames, mat] + 1.0
    log_probs = logits.log_softmax(-1)
    opts = SearchOptions(lm_scales=(0.01, 1.0), num_paths=50)
    hyps = decode_log_probs(log_probs, lengths, [method], graphs, opts)[method]
    assert hyps["lm_scale_0.01"] == [["THE", "CAT", "SAT", "ON", "THE", "PARK"]]
    assert hyps["lm_scale_1.0"] == [sent.split()]
