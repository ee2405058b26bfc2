"""Training loop: loss falls, resume == uninterrupted, artefacts, dataloader contract."""

from __future__ import annotations

import math
from dataclasses import asdict

import pytest
import torch
import yaml
from lhotse import CutSet

from w2v.asr.data import make_dataloader
from w2v.asr.model import KIND, AsrConfig
from w2v.asr.tokens import Tokenizer
from w2v.asr.train import TrainConfig, noam_factor, train
from w2v.bin.train import main as train_main

TINY = AsrConfig(d_model=32, num_heads=4, num_layers=2, ffn_dim=64, conv_kernel=5,
                 subsampling_channels=8, dropout=0.1)


def _cfg(toy_data, exp_dir, **kw):
    lang, train_path, dev_path = toy_data
    base = dict(exp_dir=str(exp_dir), lang_dir=str(lang), train_cuts=[str(train_path)],
                dev_cuts=[str(dev_path)], token_type="char", num_epochs=2, max_duration=2.0,
                num_buckets=2, lr=3e-3, warmup_steps=5, progress=False, seed=7)
    base.update(kw)
    return TrainConfig(**base)


def test_audio_batches_say_they_carry_audio(toy_data, librispeech_tiny_cuts):
    from w2v.asr.data import model_inputs

    cuts = librispeech_tiny_cuts["dev-clean"].subset(first=3)
    batch = next(iter(make_dataloader(cuts, train=False, max_duration=100, audio=True)))
    assert "features" not in batch
    audio, lens = model_inputs(batch)
    assert audio.dim() == 2 and lens.tolist() == sorted(round(c.duration * 16000) for c in cuts)[::-1]


def test_dataloader_batches(toy_data):
    _, train_path, dev_path = toy_data
    cuts = CutSet.from_file(train_path).to_eager()
    dl = make_dataloader(cuts, train=False, max_duration=1.5)
    seen = []
    for batch in dl:
        f, lens = batch["features"], batch["feature_lens"]
        assert f.dtype == torch.float32 and f.shape[0] == lens.shape[0] == len(batch["texts"])
        assert f.shape[2] == 80 and int(lens.max()) == f.shape[1]
        assert lens.tolist() == sorted(lens.tolist(), reverse=True)
        for cid, n, text in zip(batch["cut_ids"], lens.tolist(), batch["texts"]):
            assert n == cuts[cid].num_frames and text == cuts[cid].supervisions[0].text
        seen += batch["cut_ids"]
    assert sorted(seen) == sorted(cuts.ids)  # eval: every cut exactly once
    # Eval order is deterministic.
    assert [b["cut_ids"] for b in dl] == [b["cut_ids"] for b in dl]
    # Train: two ranks read disjoint batches.
    ids = []
    for rank in (0, 1):
        tdl = make_dataloader(cuts, train=True, max_duration=1.5, num_buckets=2,
                              world_size=2, rank=rank, spec_augment=True)
        tdl.sampler.set_epoch(1)
        ids.append({c for b in tdl for c in b["cut_ids"]})
    assert ids[0] and ids[1] and not ids[0] & ids[1]


def test_tokenizer_char(toy_data):
    tok = Tokenizer(toy_data[0], "char")
    assert tok.num_tokens == 6  # '#0' is not an output
    assert tok.encode(["A B", "D C X"]) == [[2, 3], [5, 4, 1]]
    assert tok.encode(["DCX"]) == [[1]]  # a Latin run is one unit (w2v.data.text), unknown here
    assert tok.decode([2, 3]) == "A B"
    with pytest.raises(ValueError, match="token_type"):
        Tokenizer(toy_data[0], "word")


def test_noam_schedule():
    assert noam_factor(5, 10) == pytest.approx(0.5)
    assert noam_factor(10, 10) == pytest.approx(1.0)
    assert noam_factor(40, 10) == pytest.approx(0.5)


def test_training_loss_falls(toy_data, tmp_path):
    cfg = _cfg(toy_data, tmp_path / "exp", num_epochs=6, spec_augment=False)
    result = train(cfg, TINY)
    h = result.history
    assert h["epoch"] == [1, 2, 3, 4, 5, 6]
    assert h["train_loss"][-1] < 0.6 * h["train_loss"][0], h["train_loss"]
    assert h["dev_loss"][-1] < 0.6 * h["dev_loss"][0], h["dev_loss"]


def test_trains_on_20ms_features_of_any_dim(toy_data_20ms, toy_data, tmp_path):
    """SSL-like cuts (48-dim, 20 ms): the model takes their dim, subsamples ×2, and learns."""
    cfg = _cfg(toy_data_20ms, tmp_path / "exp", num_epochs=6, max_duration=4.0, spec_augment=False)
    result = train(cfg, TINY)
    assert (result.config.feature_dim, result.config.subsampling) == (48, 2)
    h = result.history
    assert h["dev_loss"][-1] < 0.6 * h["dev_loss"][0], h["dev_loss"]
    # resuming on features of another shape names both
    with pytest.raises(ValueError, match=r"80-dim features at 10 ms, but the model .* takes "
                                         r"48-dim features subsampled ×2"):
        train(_cfg(toy_data, tmp_path / "exp", num_epochs=7, start_epoch=7), TINY)


def test_resume_equals_uninterrupted(toy_data, tmp_path):
    full = train(_cfg(toy_data, tmp_path / "a", num_epochs=2, max_batches_per_epoch=4), TINY)
    train(_cfg(toy_data, tmp_path / "b", num_epochs=1, max_batches_per_epoch=4), TINY)
    # Resume deliberately passes other model sizes: the checkpoint's config must win.
    resumed = train(_cfg(toy_data, tmp_path / "b", num_epochs=2, start_epoch=2,
                         max_batches_per_epoch=4), AsrConfig(d_model=64))
    assert resumed.config == full.config
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert resumed.history["train_loss"] == pytest.approx(full.history["train_loss"][1:], rel=1e-6)
    # ... and differs from epoch 1 (the comparison can fail).
    ep1 = torch.load(tmp_path / "b" / "epoch-1.pt", weights_only=False)["model"]
    assert any(not torch.equal(ep1[k], a[k]) for k in a)


def test_checkpoint_and_config_artefacts(toy_data, tmp_path):
    exp = tmp_path / "exp"
    lang, train_path, dev_path = toy_data
    train_main(["--exp-dir", str(exp), "--lang-dir", str(lang), "--token-type", "char",
                "--train-cuts", str(train_path), "--dev-cuts", str(dev_path),
                "--num-epochs", "1", "--max-duration", "2", "--max-batches-per-epoch", "2",
                "--d-model", "32", "--num-layers", "1", "--ffn-dim", "64", "--conv-kernel", "5",
                "--subsampling-channels", "8", "--progress", "false"])
    ckpt = torch.load(exp / "epoch-1.pt", weights_only=False)
    assert ckpt["kind"] == KIND and ckpt["epoch"] == 1
    assert ckpt["config"]["d_model"] == 32 and ckpt["config"]["num_tokens"] == 6
    for key in ("model", "optimizer", "scheduler", "sampler", "train_config"):
        assert key in ckpt
    assert ckpt["train_config"]["token_type"] == "char"
    conf = yaml.safe_load((exp / "config.yaml").read_text())
    assert conf["kind"] == KIND and conf["model"] == ckpt["config"]
    assert list((exp / "tensorboard").iterdir())
    assert not list(exp.glob(".*tmp"))
    with pytest.raises(FileNotFoundError, match="epoch-4.pt"):
        train(_cfg(toy_data, exp, start_epoch=5, num_epochs=5), TINY)


def test_tokenizer_bpe_ids_match_tokens_txt(tmp_path):
    import sentencepiece as spm

    text = tmp_path / "text.txt"
    text.write_text("\n".join(["THE CAT SAT ON THE MAT", "A DOG RAN AFTER THE CAT"] * 20) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(tmp_path / "bpe"), vocab_size=18, model_type="unigram",
        user_defined_symbols=["<blk>", "<sos/eos>"], unk_id=2, bos_id=-1, eos_id=-1,
        character_coverage=1.0,
    )
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "bpe.model"))
    lines = [f"{sp.id_to_piece(i)} {i}" for i in range(sp.get_piece_size())] + ["#0 18"]
    (tmp_path / "tokens.txt").write_text("\n".join(lines) + "\n")
    tok = Tokenizer(tmp_path, "bpe")
    assert tok.num_tokens == 18
    ids = tok.encode(["THE CAT"])[0]
    assert ids and 0 not in ids and tok.decode(ids) == "THE CAT"
    # A tokens.txt that disagrees with bpe.model is refused.
    lines[5], lines[6] = lines[6].split()[0] + " 5", lines[5].split()[0] + " 6"
    (tmp_path / "tokens.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="regenerate tokens.txt"):
        Tokenizer(tmp_path, "bpe")


def test_keep_trainable_drops_too_short(toy_data):
    from w2v.asr.train import keep_trainable

    lang, train_path, _ = toy_data
    cuts = CutSet.from_file(train_path).to_eager()
    first = cuts[0]
    # 12 frames → 2 output frames, fewer than the letters of a 3-letter word.
    short = first.truncate(duration=0.12, preserve_id=False)
    short.supervisions[0].text = "A B C"
    kept = keep_trainable(CutSet.from_cuts([first, short]), Tokenizer(lang, "char"))
    assert list(kept.ids) == [first.id]


def test_spec_augment_keeps_durations_and_fractions():
    from w2v.asr.data import default_spec_augment

    fbank, ssl = default_spec_augment(), default_spec_augment(0.02, 768)
    assert (fbank.time_warp_factor, fbank.frames_mask_size, fbank.features_mask_size) == (80, 100, 27)
    assert (ssl.time_warp_factor, ssl.frames_mask_size, ssl.features_mask_size) == (40, 50, 259)


def test_decode_refuses_cuts_of_another_feature_type(toy_data, toy_data_20ms):
    from w2v.bin.decode import check_features

    cfg = AsrConfig(feature_dim=48, subsampling=2)
    cuts_20ms = CutSet.from_file(toy_data_20ms[1])
    check_features(cuts_20ms, toy_data_20ms[1], cfg)  # matching: no error
    with pytest.raises(ValueError, match=r"cuts_train.jsonl.gz: 80-dim features at 10 ms, but the "
                                         r"model takes 48-dim features subsampled ×2"):
        check_features(CutSet.from_file(toy_data[1]), toy_data[1], cfg)


def test_small_corpus_still_gives_batches(toy_data):
    """drop_last with more buckets than batches would yield nothing (a 2.6 min corpus, 10
    buckets of 30 s did); the buckets are capped, or bucketing dropped."""
    from w2v.asr.data import make_sampler

    cuts = CutSet.from_file(toy_data[1]).to_eager()
    total = sum(c.duration for c in cuts)
    for max_duration in (total / 3, total / 1.5):
        sampler = make_sampler(cuts, train=True, max_duration=max_duration, num_buckets=10)
        sampler.set_epoch(1)
        batches = list(sampler)
        assert batches, max_duration
        assert sum(c.duration for b in batches for c in b) > total / 3


# --------------------------------------------------------------------------- checkpoints on disk


def test_keep_last_k_and_nothing_left_to_train(toy_data, tmp_path):
    exp = tmp_path / "exp"
    train(_cfg(toy_data, exp, num_epochs=4, keep_last_k=2, max_batches_per_epoch=2), TINY)
    assert sorted(p.name for p in exp.glob("epoch-*.pt")) == ["epoch-3.pt", "epoch-4.pt"]
    before = (exp / "epoch-4.pt").read_bytes()
    again = train(_cfg(toy_data, exp, num_epochs=4, keep_last_k=2, max_batches_per_epoch=2), TINY)
    assert again.model is None and again.history["epoch"] == []
    assert (exp / "epoch-4.pt").read_bytes() == before


def test_resume_skips_a_truncated_checkpoint_and_stale_temporaries(toy_data, tmp_path, caplog):
    exp = tmp_path / "exp"
    train(_cfg(toy_data, exp, num_epochs=2, max_batches_per_epoch=2), TINY)
    ep1 = torch.load(exp / "epoch-1.pt", weights_only=True)
    newest = exp / "epoch-2.pt"
    newest.write_bytes(newest.read_bytes()[:5000])  # a full disk cut the write short
    stale = exp / ".epoch-3.pt.k2j4h1.tmp"  # a kill during a write leaves this
    stale.write_bytes(b"partial")
    with caplog.at_level("INFO"):
        result = train(_cfg(toy_data, exp, num_epochs=3, max_batches_per_epoch=2), TINY)
    assert result.history["epoch"] == [2, 3]  # resumed after epoch 1, the newest that loads
    assert not stale.exists()
    text = caplog.text
    assert f"skipping {newest}: it does not load ({newest}: truncated or corrupt checkpoint" in text
    assert f"resuming after {exp / 'epoch-1.pt'}" in text
    assert f"removed {stale}" in text
    redone = torch.load(newest, weights_only=True)
    assert redone["epoch"] == 2 and redone["scheduler"]["last_epoch"] == 2 * ep1["scheduler"]["last_epoch"]


def test_explicit_resume_from_a_corrupt_checkpoint_names_it(toy_data, tmp_path):
    exp = tmp_path / "exp"
    train(_cfg(toy_data, exp, num_epochs=1, max_batches_per_epoch=2), TINY)
    (exp / "epoch-1.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(ValueError, match=r"epoch-1.pt: truncated or corrupt checkpoint"):
        train(_cfg(toy_data, exp, num_epochs=2, start_epoch=2), TINY)


# --------------------------------------------------------------------------- non-finite losses


def _poison(monkeypatch, every: int):
    """CTC loss of the first cut of every ``every``-th batch becomes inf."""
    import w2v.asr.train as train_module

    real, calls = train_module.ctc_loss, []

    def ctc_loss(log_probs, lengths, targets, impl):
        losses = real(log_probs, lengths, targets, impl)
        calls.append(1)
        if torch.is_grad_enabled() and len(calls) % every == 0:
            losses = losses.clone()
            losses[0] = float("inf")
        return losses

    monkeypatch.setattr(train_module, "ctc_loss", ctc_loss)


def test_nonfinite_losses_are_named_and_left_out(toy_data, tmp_path, monkeypatch, caplog):
    _poison(monkeypatch, every=2)
    with caplog.at_level("WARNING"):
        result = train(_cfg(toy_data, tmp_path / "exp", num_epochs=3, spec_augment=False), TINY)
    warned = [r.getMessage() for r in caplog.records if "CTC loss is not finite" in r.getMessage()]
    assert warned and all("left out: tr" in m for m in warned)  # the cut ids are named
    assert "cut losses were not finite" in caplog.text
    h = result.history
    assert all(math.isfinite(x) for x in h["train_loss"]) and h["dev_loss"][-1] < h["dev_loss"][0]


def test_too_many_nonfinite_batches_in_a_row_stop_the_run(toy_data, tmp_path, monkeypatch):
    _poison(monkeypatch, every=1)
    with pytest.raises(RuntimeError, match=r"3 batches in a row had a non-finite CTC loss or gradient "
                                           r"\(epoch 1, batch 2; last cuts: tr\d+\)"):
        train(_cfg(toy_data, tmp_path / "exp", num_epochs=2, max_nonfinite_batches=3), TINY)
    assert not (tmp_path / "exp" / "epoch-1.pt").exists()


def test_mid_epoch_checkpoint_resumes_without_repeating_batches(toy_data, tmp_path, monkeypatch):
    """A run killed inside an epoch resumes from its checkpoint-<step>.pt and reads exactly the
    batches the uninterrupted run read after that step."""
    import w2v.asr.train as train_module

    def batches(exp):
        return [line.split()[2:] for line in (exp / "batches.rank0.txt").read_text().splitlines()]

    kw = dict(num_epochs=1, save_every_n=2, log_batches=True, spec_augment=False)
    full = tmp_path / "full"
    train(_cfg(toy_data, full, **kw), TINY)
    assert len(batches(full)) >= 5

    killed = tmp_path / "killed"
    real, calls = train_module.compute_loss, []

    def dies_in_batch_4(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "compute_loss", dies_in_batch_4)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(toy_data, killed, **kw), TINY)
    monkeypatch.undo()
    assert sorted(p.name for p in killed.glob("*.pt")) == ["checkpoint-2.pt"]
    assert torch.load(killed / "checkpoint-2.pt", weights_only=True)["step"] == 2
    (killed / "batches.rank0.txt").write_text("")
    train(_cfg(toy_data, killed, **kw), TINY)
    assert batches(killed) == batches(full)[2:]
    done = torch.load(killed / "epoch-1.pt", weights_only=True)
    assert done["step"] == len(batches(full))


# --------------------------------------------------------------------------- devices, precision

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_bf16_training_on_the_cpu_learns(toy_data, tmp_path):
    result = train(_cfg(toy_data, tmp_path / "exp", num_epochs=6, spec_augment=False, amp="bf16", device="cpu"), TINY)
    h = result.history
    assert h["dev_loss"][-1] < 0.6 * h["dev_loss"][0], h["dev_loss"]
    assert next(result.model.parameters()).dtype == torch.float32  # weights stay fp32


def test_fp16_and_cuda_need_a_gpu(toy_data, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="--amp fp16 needs a CUDA device"):
        train(_cfg(toy_data, tmp_path / "exp", amp="fp16", device="cpu"), TINY)
    with pytest.raises(RuntimeError, match="--device cuda: this torch sees no CUDA device"):
        train(_cfg(toy_data, tmp_path / "exp", device="cuda"), TINY)


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
def test_training_on_cuda(toy_data, tmp_path, amp):
    """The GPU path: model and batches on the device, the loss (k2's with a CUDA k2, else torch's)
    there too; the checkpoint loads on the CPU and gives the GPU model's outputs."""
    from w2v.asr.checkpoint import load_checkpoint

    exp = tmp_path / "exp"
    result = train(_cfg(toy_data, exp, num_epochs=4, spec_augment=False, device="cuda", amp=amp), TINY)
    assert next(result.model.parameters()).is_cuda
    h = result.history
    assert h["dev_loss"][-1] < 0.8 * h["dev_loss"][0], h["dev_loss"]
    cpu_model, _ = load_checkpoint(exp / "epoch-4.pt")
    x, lens = torch.randn(2, 60, 80), torch.tensor([60, 41])
    result.model.eval()
    with torch.no_grad():
        gpu_out, _ = result.model(x.cuda(), lens.cuda())
        cpu_out, _ = cpu_model(x, lens)
    torch.testing.assert_close(gpu_out.cpu()[:, :9], cpu_out[:, :9], atol=2e-3, rtol=1e-3)


# --------------------------------------------------------------------------- joint CTC/attention


def test_joint_ctc_attention_training_and_its_decoders(toy_data, tmp_path):
    """The decoder learns beside CTC; every attention method then reads the dev words."""
    from w2v.decode.attention import AttentionOptions, decode_attention
    from w2v.decode.ctc import DecodingGraphs, SearchOptions, TokenDecoder, ctc_greedy_search

    lang = tmp_path / "lang_sos"
    lang.mkdir()
    units = ["<blk>", "<sos/eos>", "<unk>", "A", "B", "C", "D", "#0"]
    (lang / "tokens.txt").write_text("".join(f"{u} {i}\n" for i, u in enumerate(units)))
    _, train_path, dev_path = toy_data
    cfg = _cfg((lang, train_path, dev_path), tmp_path / "exp", num_epochs=60, spec_augment=False,
               warmup_steps=200)
    result = train(cfg, AsrConfig(**{**asdict(TINY), "num_decoder_layers": 1}))
    model = result.model.eval()
    assert model.config.sos_eos == 1 and model.decoder is not None
    saved = torch.load(tmp_path / "exp" / "epoch-60.pt", weights_only=True)
    assert any(k.startswith("decoder.") for k in saved["model"])

    graphs = DecodingGraphs(words=[], tokens=TokenDecoder(units[:-1]))
    dev = CutSet.from_file(dev_path)
    batch = next(iter(make_dataloader(dev, train=False, max_duration=100)))
    with torch.no_grad():
        x, lens = model.encode(batch["features"], batch["feature_lens"])
        log_probs = torch.log_softmax(model.output(x), -1)
    refs = ["".join(t.split()) for t in batch["texts"]]
    greedy = ["".join(graphs.tokens.words(s)) for s in ctc_greedy_search(log_probs, lens)]
    hyps = decode_attention(model, x, lens, log_probs, ["ctc-prefix-beam-search", "attention", "attention-rescoring"],
                            graphs, SearchOptions(), AttentionOptions(beam=4))
    import kaldialign

    def cer(hs):
        return sum(kaldialign.edit_distance(list(r), list(h))["total"] for r, h in zip(refs, hs)) / sum(map(len, refs))

    got = {m: cer(["".join(h) for h in per_key[m]]) for m, per_key in hyps.items()}
    assert cer(greedy) < 0.15 and got["ctc-prefix-beam-search"] <= cer(greedy)
    # the decoder alone learns slower than CTC on 48 toy utterances, but it has learned (chance ≈ 1)
    assert got["attention"] < 0.35, got
    assert got["attention-rescoring"] < 0.1, got  # CTC's n-best keeps it near CTC's
