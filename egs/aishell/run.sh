#!/usr/bin/env bash
# AISHELL-1: k2 CTC recipe on characters (wenet-style), from corpus to CER report.
#
# Usage: ./run.sh [--stage N] [--stop-stage M] [--corpus-dir DIR] [options]
#   --corpus-dir is the directory holding data_aishell/ (wav/{train,dev,test}, transcript/), or a
#   wenet data dir (<part>/wav.scp + <part>/text, or <part>/data.list).
#   With none, stage 0 synthesises the offline demo corpus (espeak-ng Mandarin voices, AISHELL-1
#   layout, --synth-size mini = 30 min) into download/. For the real corpus:
#   ./run.sh --corpus-dir /data/aishell --num-epochs 40 --max-duration 300
#   Characters are the tokens; the lexicon and the word-level LMs use the transcript's segmentation.
#
# Stages:
#   0 corpus     synthesise (or --download true: fetch with lhotse) the corpus
#   1 manifests  lhotse manifests, validated; bad files listed in data/manifests/rejected_*
#                (--resample true: other sample rates resampled to 16 kHz instead of rejected)
#   2 fbank      80-dim fbank into lhotse storage (--speed-perturb true: 0.9/1.1 on train)
#   3 tokens     training transcripts (word-segmented) for the lexicon and LMs
#   4 lang       characters as tokens: words.txt, tokens.txt, lexicon, L, L_disambig
#   5 lm         3-gram (first pass) and 4-gram (rescoring) ARPA + G; or --lm-arpa/--rescore-arpa
#   6 graph      HLG (determinised, epsilon-free, arc-sorted) and G_4_gram.pt
#   7 pretrain   self-supervised pretraining of --ssl-model (skipped when empty)
#   8 ssl-feats  --feature-type ssl: layer --ssl-layer of --ssl-checkpoint into data/ssl/<tag>/
#   9 train      CTC model on --feature-type (ssl-weighted / ssl-finetune: the encoder runs on the
#                audio inside the model); --world-size N runs N processes via torchrun
#  10 decode     every --decoding-method on every test part with the average of epochs
#                --epoch-avg+1..--epoch (exported as exp_dir/pretrained-epoch-E-avg-A.pt)
#  11 report     prints $exp_dir/RESULTS.md; exp/COMPARISON.md (+ plots) sets every run against fbank
#   (stages 5-11 live in local/ctc_stages.sh, shared by all recipes)
#   A stage runs only when what it would be built from (inputs, options) differs from the record
#   beside its outputs (README "Stage records"); a second run building the same thing stops.
#
# Options (defaults in brackets; run with --help to see this text):
#   --stage [0] --stop-stage [11] --corpus-dir [] --download [false] --synth-size [mini]
#   --synth-seed [0] --train-parts [train] --dev-parts [dev] --test-parts [test]
#   --nj [2] --resample [false] --speed-perturb [false] --lm-arpa [] --rescore-arpa []
#   --synth-unlabeled-minutes [0] (stage 0 also writes an audio-only part, more voices, unlabeled/)
#   --unlabeled-dirs [] (directories of audio, any depth, no transcripts) --unlabeled-parts []
#   (corpus parts used as audio only; with --synth-unlabeled-minutes: unlabeled): stage 7's input
#   beside the train parts. --label-budget [all] (10m, 1h, 10h, <N>m, <N>h: a speaker-balanced
#   subset of the train parts trains stage 9; exp dir ctc_<tag>_<budget>)
#   --label-budgets [] --feature-types [] (a sweep: stages 8-10 for every budget x feature type,
#   then the report; e.g. --label-budgets "10m 1h all" --feature-types "fbank ssl")
#   --ssl-layers [] ("1 2 ..." or all: a layer probe, --feature-type ssl once per layer, in the sweep)
#   --ssl-models [] ("wav2vec2 hubert data2vec": the sweep pretrains each, then every SSL feature type
#   runs on each at every budget: objectives side by side)
#   --ssl-model [] --ssl-size [tiny] (small: 4 x 128 on log-mels, the CPU choice; base, large: the
#   papers') --ssl-steps [600] --feature-type [fbank] (or ssl, ssl-weighted, ssl-finetune)
#   --ssl-checkpoint [exp/ssl_<ssl-model>] --ssl-layer [2] --ssl-bf16 [false]
#   --exp-dir [exp/ctc_<tag>], tag: fbank, <ckpt>_L<layer>, <ckpt>_weighted, <ckpt>_finetune_L<layer>
#   --ssl-freeze-updates [0] (ssl-finetune: the encoder stays frozen for the first N updates)
#   --ssl-lr-scale [0.1] (ssl-finetune: the encoder trains at this times the peak learning rate)
#   --num-epochs [auto] (until the smoothed dev loss stops improving for --patience [5] epochs and
#   --patience-updates [250] updates, at most --max-epochs [200]; or a number) --keep-last-k [5] --save-every-n [0]
#   --model-size [demo] (medium 33M, large 80M; linear: fairseq's linear CTC head on the SSL encoder)
#   --num-decoder-layers [2] (joint CTC/attention, wenet's U2; 0: CTC only) --ctc-weight [0.3]
#   --max-duration [30] --epoch [the last trained] --avg [3]
#   --device [auto] (cpu, cuda) --amp [none] (bf16, fp16) --world-size [1] (processes per node)
#   --nnodes [1] --node-rank [0] --master-addr [localhost] --master-port [29500] (multi-node torchrun)
#   --decoding-method [ctc-greedy-search ctc-prefix-beam-search attention-rescoring 1best
#   nbest-rescoring whole-lattice-rescoring]
#   --lm-scales [0.1,0.2,...,1.0] --search-beam [20] --max-active-states [10000]

stage=0
stop_stage=11
corpus_dir=
download=false
synth_size=mini
synth_seed=0
synth_unlabeled_minutes=0
train_parts="train"
dev_parts="dev"
test_parts="test"
nj=2
resample=false
speed_perturb=false
lm_arpa=
rescore_arpa=
unlabeled_dirs=
unlabeled_parts=
ssl_model=
ssl_size=tiny
ssl_steps=600
feature_type=fbank
ssl_checkpoint=
ssl_layer=2
ssl_bf16=false
ssl_freeze_updates=0
ssl_lr_scale=0.1
label_budget=all
label_budgets=
feature_types=
ssl_layers=
ssl_models=
exp_dir=
num_epochs=auto
max_epochs=200
patience=5
patience_updates=250
keep_last_k=5
save_every_n=0
model_size=demo
num_decoder_layers=2
ctc_weight=0.3
max_duration=30
device=auto
amp=none
world_size=1
nnodes=1
node_rank=0
master_addr=localhost
master_port=29500
epoch=
avg=3
decoding_method="ctc-greedy-search ctc-prefix-beam-search attention-rescoring 1best nbest-rescoring whole-lattice-rescoring"
lm_scales=0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0
search_beam=20
max_active_states=10000

cd "$(dirname "$0")"
. local/path.sh
. local/parse_options.sh
set -euo pipefail
. local/common.sh
. local/ctc_options.sh

corpus=aishell
lang_dir=data/lang_char
lm_dir=data/lm
token_type=char
all_parts="$train_parts $dev_parts $test_parts"


if [ -z "$corpus_dir" ]; then
  # lhotse 1.33 extracts AISHELL-1 to <target>/aishell/data_aishell
  corpus_dir=$([ "$download" = true ] && echo download/aishell || echo download)
  synthetic=$([ "$download" = true ] && echo false || echo true)
else
  synthetic=false
fi
# Audio-only input of stage 7: --unlabeled-dirs, and the audio of --unlabeled-parts.
[ "$synthetic" = false ] || [ "$synth_unlabeled_minutes" = 0 ] || unlabeled_parts=${unlabeled_parts:-unlabeled}
unlabeled_audio="$unlabeled_dirs $(for p in $unlabeled_parts; do echo "$corpus_dir/data_aishell/wav/$p"; done)"
# Part names always; the layout too when the corpus is already there (stage 0 may add parts).
python -m w2v.bin.check_corpus --corpus aishell --parts $all_parts \
  $([ -d "$corpus_dir" ] && echo --corpus-dir "$corpus_dir" --missing-parts-ok true) || exit 1

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  if [ "$download" = true ]; then
    log "Stage 0: download AISHELL-1 into $corpus_dir"
    python -m w2v.bin.download_corpus --corpus aishell --target-dir "$(dirname "$corpus_dir")"
  elif [ "$synthetic" = true ]; then
    log "Stage 0: synthesise the offline demo corpus ($synth_size) into $corpus_dir"
    python -m w2v.bin.make_corpus --layout aishell --out "$corpus_dir" \
      --size "$synth_size" --seed "$synth_seed" --unlabeled-minutes "$synth_unlabeled_minutes"
  else
    log "Stage 0: using the corpus in $corpus_dir"
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: lhotse manifests for $all_parts"
  python -m w2v.bin.check_corpus --corpus aishell --parts $all_parts --corpus-dir "$corpus_dir" || exit 1
  for part in $all_parts; do
    need 0 corpus $(python -m w2v.bin.check_corpus --corpus aishell --corpus-dir "$corpus_dir" --parts "$part" --part-inputs true)
    if stage_begin "manifests $part" "data/manifests/.aishell_$part.json" --options resample="$resample" \
         --outputs $(manifests_of $part) "data/manifests/rejected_aishell_$part.txt"; then
      python -m w2v.bin.prepare_corpus --corpus aishell --corpus-dir "$corpus_dir" \
        --output-dir data/manifests --parts "$part" --nj "$nj" --resample "$resample"
      stage_end
    fi
  done
fi

# Stage 2 (fbank) is the same for every corpus.
. local/fbank_stage.sh

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: word-segmented training transcripts in $lang_dir"
  need 1 manifests $(for p in $train_parts; do echo data/manifests/aishell_supervisions_${p}.jsonl.gz; done)
  if stage_begin "transcripts" "$lang_dir/.transcripts.json" --outputs "$lang_dir/transcript_words.txt"; then
    python -m w2v.bin.export_text --words --out "$lang_dir/transcript_words.txt" \
      $(for p in $train_parts; do echo data/manifests/aishell_supervisions_${p}.jsonl.gz; done)
    stage_end
  fi
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: lang dir $lang_dir (lexicon, L, L_disambig)"
  need 3 transcripts "$lang_dir/transcript_words.txt"
  if stage_begin "lang" "$lang_dir/.lang.json" \
       --outputs "$lang_dir"/{words.txt,tokens.txt,lexicon.txt,lexicon_disambig.txt,L.pt,L_disambig.pt}; then
    python -m w2v.bin.prepare_lang --lang-dir "$lang_dir" --token-type char
    stage_end
  fi
fi

# Stages 5-11 are the same for every corpus.
. local/ctc_stages.sh
