"""bin/decode around a fake acoustic model: fixed peaky log-probs per utterance."""

import json
import sys
import types

import pytest
import torch

import w2v.bin.decode as bin_decode
from tests.helpers import TOY_SENTENCES as SENTENCES
from tests.helpers import peaky_log_probs
from w2v.lang.bpe import load_bpe
from tests.helpers import build_lang_and_graphs

# utt-c has an OOV word (GRASS): decodable only by spelling, an error for the HLG methods
TEST = {"utt-a": "THE DOG SAT ON THE MAT", "utt-b": "A RED PARK", "utt-c": "THE CAT ON THE GRASS"}


class FakeModel(torch.nn.Module):
    """Ignores the features; returns the peaky output stored for the utterance id in feature[0]."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = outputs
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.config = types.SimpleNamespace(ssl=None)

    def forward(self, features, feature_lens):
        ids = features[:, 0, 0].long().tolist()
        lps = [self.outputs[i] for i in ids]
        T = max(lp.shape[0] for lp in lps)
        out = torch.zeros(len(lps), T, lps[0].shape[1])
        for b, lp in enumerate(lps):
            out[b, : lp.shape[0]] = lp
        return out, torch.tensor([lp.shape[0] for lp in lps])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("bindec")
    lang_dir, lm_dir = build_lang_and_graphs(root, SENTENCES, vocab_size=30)
    sp = load_bpe(lang_dir / "bpe.model")
    cut_ids = list(TEST)
    log_probs, lengths = peaky_log_probs([sp.encode(TEST[c]) for c in cut_ids], 30, noise=0.3)
    model = FakeModel([log_probs[i, : lengths[i]] for i in range(len(cut_ids))])
    batches = [
        {"features": torch.tensor([[[0.0]], [[1.0]]]), "feature_lens": torch.tensor([1, 1]),
         "texts": [TEST["utt-a"], TEST["utt-b"]], "cut_ids": ["utt-a", "utt-b"]},
        {"features": torch.tensor([[[2.0]]]), "feature_lens": torch.tensor([1]),
         "texts": [TEST["utt-c"]], "cut_ids": ["utt-c"]},
    ]
    return root, lang_dir, lm_dir, model, batches


def test_parse_methods():
    assert bin_decode.parse_methods(["1best,ctc-decoding", "1best"]) == ["1best", "ctc-decoding"]
    with pytest.raises(ValueError):
        bin_decode.parse_methods(["attention-beam"])


def test_test_set_name():
    from pathlib import Path

    assert bin_decode.cuts_test_set_name(Path("data/fbank/librispeech_cuts_test-clean.jsonl.gz")) == "test-clean"
    assert bin_decode.cuts_test_set_name(Path("dev.jsonl")) == "dev"


def test_main_with_fake_model(setup, monkeypatch, capsys):
    root, lang_dir, lm_dir, model, batches = setup
    exp = root / "exp"
    checkpoint = types.ModuleType("w2v.asr.checkpoint")
    checkpoint.load_averaged = lambda exp_dir, epoch, avg: (model, types.SimpleNamespace(ssl=None))
    checkpoint.load_checkpoint = lambda path: pytest.fail("no --checkpoint was given")
    data = types.ModuleType("w2v.asr.data")
    data.make_dataloader = lambda cuts, train, max_duration, audio, **sharding: batches
    data.cut_text = lambda cut: cut.text
    monkeypatch.setitem(sys.modules, "w2v.asr.checkpoint", checkpoint)
    monkeypatch.setitem(sys.modules, "w2v.asr.data", data)
    import lhotse

    cuts = [types.SimpleNamespace(id=i, text=t, duration=3.0) for i, t in TEST.items()]
    monkeypatch.setattr(lhotse.CutSet, "from_file", staticmethod(lambda path: cuts))
    monkeypatch.setattr(bin_decode, "check_features", lambda cuts, path, config: None)
    bin_decode.main([
        "--exp-dir", str(exp), "--epoch", "3", "--avg", "2",
        "--lang-dir", str(lang_dir), "--lm-dir", str(lm_dir),
        "--cuts", str(root / "x_cuts_test-clean.jsonl.gz"),
        "--decoding-method", "ctc-greedy-search,1best",
        "--decoding-method", "whole-lattice-rescoring",
        "--lm-scales", "0.5,1.0",
    ])
    printed = capsys.readouterr().out
    entries = {e["decoding_method"]: e for e in json.loads((exp / "results.json").read_text())}
    assert set(entries) == {"ctc-greedy-search", "1best/lm_scale_0.5", "1best/lm_scale_1.0",
                            "whole-lattice-rescoring/lm_scale_0.5", "whole-lattice-rescoring/lm_scale_1.0"}
    # 14 reference words; greedy spells GRASS out, the HLG methods cannot say it
    assert entries["ctc-greedy-search"]["wer"] == 0.0
    hlg = entries["1best/lm_scale_1.0"]  # icefall's 1best: the graph's scores at scale 1
    assert hlg["ref_words"] == 14 and hlg["del"] + hlg["sub"] >= 1 and hlg["wer"] > 0
    assert entries["whole-lattice-rescoring/lm_scale_0.5"]["labels"] == {
        "epoch": 3, "avg": 2, "label_budget": "all", "lm_scale": 0.5}
    assert (exp / "1best" / "errs-test-clean-lm_scale_1.0-epoch-3-avg-2.txt").read_text().startswith(
        f"%WER {hlg['wer']:.2f}% [")
    assert (exp / "whole-lattice-rescoring" / "wer-summary-test-clean-epoch-3-avg-2.txt").exists()
    assert (exp / "whole-lattice-rescoring" / "recogs-test-clean-lm_scale_1.0-epoch-3-avg-2.txt").exists()
    assert "| 1best/lm_scale_1.0 | fbank | epoch-3-avg-2 |" in (exp / "RESULTS.md").read_text()
    assert (exp / "wer-test-clean.png").exists()
    assert printed.splitlines()[0] == "test-clean"
    assert printed.splitlines()[2].startswith("ctc-greedy-search")  # best first


def test_bound_options():
    from w2v.decode.ctc import SearchOptions

    required = ["--exp-dir", "e", "--epoch", "1", "--lang-dir", "l", "--cuts", "c", "--decoding-method", "1best"]
    args = bin_decode.get_parser().parse_args(required + ["--max-arcs-per-frame", "none",
                                                          "--max-product-arcs", "5000000"])
    assert args.max_arcs_per_frame is None and args.max_product_arcs == 5_000_000
    defaults = SearchOptions()
    assert (args.search_frames, args.max_step_mb) == (defaults.search_frames, defaults.max_step_mb)
