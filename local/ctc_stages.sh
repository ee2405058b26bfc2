# Stages 5-11 of every CTC recipe (LM, graph, SSL pretraining, SSL features, training, decoding,
# report), sourced by egs/<corpus>/run.sh after its corpus-specific stages 0-4. Expects from the
# recipe: stage, stop_stage, lang_dir, lm_dir, token_type (bpe|char), train/dev/test_parts,
# cuts_of (the fbank cuts of parts), the options it declares, and what local/common.sh and
# local/ctc_options.sh define (need, stage_begin/stage_end, feature_tag, exp_dir, ssl_train_args).
# Every stage that builds something keeps a stage record beside its outputs (local/common.sh).

# The cuts that stages 9-10 read: fbank's (their audio, for the on-the-fly types), or SSL copies.
feat_cuts_of() {
  for c in $(cuts_of "$@"); do
    if [ "$feature_type" = ssl ]; then echo "data/ssl/$feature_tag/$(basename "$c")"; else echo "$c"; fi
  done
}
need_feat_cuts() {  # the cuts of parts, named with the stage that makes them
  if [ "$feature_type" = ssl ]; then need 8 ssl-feats $(feat_cuts_of "$@"); else need 2 fbank $(cuts_of "$@"); fi
}
# Sets train_cuts: the train parts' cuts, or a --label-budget subset of them (speaker-balanced,
# seeded; Libri-light's official 10m/1h/10h lists when librispeech_finetuning/ lies beside the
# corpus), made here once; they become inputs of the next stage_begin.
budget_cuts() {  # the training cuts of --label-budget
  local all; all=$(feat_cuts_of $train_parts)
  if [ "$label_budget" = all ]; then echo $all; else echo "$(dirname "${all%% *}")/${corpus}_cuts_budget-${label_budget}.jsonl.gz"; fi
}
set_train_cuts() {
  train_cuts=$(feat_cuts_of $train_parts)
  if [ "$label_budget" = all ]; then need_feat_cuts $train_parts; return; fi
  local out official
  out=$(budget_cuts)
  official="$(dirname "$corpus_dir")/librispeech_finetuning"
  [ -d "$official" ] && [[ " 10m 1h 10h " == *" $label_budget "* ]] || official=
  need_feat_cuts $train_parts
  if stage_begin "label budget $label_budget" "$(dirname "$out")/.budget-${label_budget}.json" \
       --options budget="$label_budget" seed=0 librilight="$official" --outputs "$out"; then
    python -m w2v.bin.subset_cuts --cuts $train_cuts --budget "$label_budget" --seed 0 --out "$out" \
      ${official:+--librilight-dir "$official"}
    stage_end
  fi
  train_cuts=$out
  need 9 "label budget" "$train_cuts"
}
need_ssl_checkpoint() {  # what stage 7 pretrained, or what --ssl-checkpoint names
  if [ "$ssl_checkpoint" = "exp/ssl_${ssl_model:-wav2vec2}" ]; then need 7 pretrain "$ssl_checkpoint"
  else need --ssl-checkpoint "" "$ssl_checkpoint"; fi
}
# Stages 7 and 9 run --world-size processes per node; with --nnodes > 1, run.sh runs on every node
# with its --node-rank, and only node 0 keeps the stage records (the nodes share the file system).
launcher="python"
if [ "$nnodes" -gt 1 ]; then
  launcher="torchrun --nnodes $nnodes --node-rank $node_rank --master-addr $master_addr --master-port $master_port --nproc-per-node $world_size"
elif [ "$world_size" -gt 1 ]; then
  launcher="torchrun --standalone --nproc-per-node $world_size"
fi

# A sweep (--label-budgets, --feature-types, --ssl-layers, --ssl-models): stages up to 7 once (7 once
# per SSL model), stages 8-10 for every budget, feature type, SSL model and layer (each cell is this
# recipe again with those options; finished cells are skipped by their stage records), then the
# report over all of them.
if [ -n "$label_budgets$feature_types$ssl_layers$ssl_models" ]; then
  cell_stage=$stage
  again=("./$(basename "$0")" "${w2v_argv[@]}" --label-budgets "" --feature-types "" --ssl-layers "" --ssl-models "" --exp-dir "")
  models=${ssl_models:-${ssl_model:--}}  # "-": none
  if [ "$stage" -le 7 ]; then
    for m in $models; do
      "${again[@]}" --ssl-model "${m#-}" --stop-stage $((stop_stage < 7 ? stop_stage : 7))
    done
    cell_stage=8
  fi
  if [ "$stop_stage" -ge 8 ]; then
    for b in ${label_budgets:-$label_budget}; do
      for f in ${feature_types:-$feature_type}; do
        for m in $([ "$f" = fbank ] && echo - || echo $models); do
          m=${m#-}
          layers=$ssl_layer
          if [ "$f" = ssl ] && [ "$ssl_layers" = all ]; then  # a layer probe over every layer of the encoder
            [ -z "$ssl_models" ] || { ssl_model=$m; ssl_checkpoint=exp/ssl_$m; }
            need_ssl_checkpoint
            layers=$(seq 1 "$(python -m w2v.bin.compute_ssl_features --checkpoint "$ssl_checkpoint" --print-num-layers true)")
          elif [ "$f" = ssl ]; then
            layers=${ssl_layers:-$ssl_layer}
          fi
          for l in $layers; do
            log "Sweep: --label-budget $b --feature-type $f$([ -z "$ssl_models" ] || [ "$f" = fbank ] || echo " --ssl-model $m")$([ "$f" != ssl ] || echo " --ssl-layer $l")"
            "${again[@]}" --label-budget "$b" --feature-type "$f" --ssl-model "$m" --ssl-layer "$l" --stage "$cell_stage" \
              --stop-stage $((stop_stage < 10 ? stop_stage : 10))
          done
        done
      done
    done
  fi
  [ "$stop_stage" -lt 11 ] || "${again[@]}" --stage 11 --stop-stage 11
  exit 0
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: n-gram LMs and G in $lm_dir"
  need 3 transcripts "$lang_dir/transcript_words.txt"
  need 4 lang "$lang_dir/words.txt"
  [ -z "$lm_arpa" ] || need --lm-arpa "" "$lm_arpa"
  [ -z "$rescore_arpa" ] || need --rescore-arpa "" "$rescore_arpa"
  if stage_begin "n-gram LMs" "$lm_dir/.lm.json" --options lm_arpa="$lm_arpa" rescore_arpa="$rescore_arpa" \
       --outputs "$lm_dir"/{3gram.arpa,4gram.arpa,G_3_gram.fst.txt,G_4_gram.fst.txt}; then
    for order in 3 4; do
      given=$([ $order = 3 ] && echo "$lm_arpa" || echo "$rescore_arpa")
      python -m w2v.bin.train_lm $([ -n "$given" ] && echo --lm-arpa "$given" || echo --text "$lang_dir/transcript_words.txt") \
        --order $order --out "$lm_dir/${order}gram.arpa" --words "$lang_dir/words.txt"
    done
    stage_end
  fi
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: HLG"
  need 4 lang "$lang_dir"/{tokens.txt,words.txt,L_disambig.pt}
  need 5 lm "$lm_dir/G_3_gram.fst.txt" "$lm_dir/4gram.arpa"
  if stage_begin "HLG" "$lang_dir/.hlg.json" --outputs "$lang_dir/HLG.pt" "$lm_dir/G_4_gram.pt"; then
    python -m w2v.bin.compile_graph --lang-dir "$lang_dir" --lm-dir "$lm_dir"
    stage_end
  fi
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  if [ -n "$ssl_model" ]; then
    log "Stage 7: self-supervised pretraining of $ssl_model (size $ssl_size, $ssl_steps updates)"
    unlabeled_cuts=
    if [ -n "${unlabeled_audio// /}" ]; then  # audio without transcripts, beside the train parts
      need --unlabeled-dirs/--unlabeled-parts "" $unlabeled_audio
      unlabeled_cuts=data/manifests/unlabeled_cuts.jsonl.gz
      if stage_begin "unlabelled audio" "data/manifests/.unlabeled.json" --options resample="$resample" \
           --outputs data/manifests/unlabeled_recordings.jsonl.gz "$unlabeled_cuts" data/manifests/rejected_unlabeled.txt; then
        python -m w2v.bin.prepare_unlabeled --dirs $unlabeled_audio --out-dir data/manifests --nj "$nj" \
          --resample "$resample" --cuts-out "$unlabeled_cuts"
        stage_end
      fi
      need 7 unlabeled "$unlabeled_cuts"
    fi
    need 2 fbank $(cuts_of $train_parts)
    if [ "$node_rank" != 0 ] || stage_begin "pretrain $ssl_model" "exp/.ssl_${ssl_model}.json" --options size="$ssl_size" \
         max_duration=24 crop_seconds=3 --progress ssl_steps="$ssl_steps" --outputs "exp/ssl_${ssl_model}" \
         --replace archive --resumable; then
      $launcher -m w2v.bin.pretrain --ssl-model "$ssl_model" --size "$ssl_size" \
        --cuts $(cuts_of $train_parts) $unlabeled_cuts --exp-dir "exp/ssl_${ssl_model}" --num-steps "$ssl_steps" \
        --max-duration 24 --crop-seconds 3 --device "$device" --amp "$amp"
      [ "$node_rank" != 0 ] || stage_end
    fi
  else
    log "Stage 7: no --ssl-model given, skipping pretraining"
  fi
fi

if [ $stage -le 8 ] && [ $stop_stage -ge 8 ]; then
  if [ "$feature_type" = ssl ]; then
    log "Stage 8: layer $ssl_layer of $ssl_checkpoint as features (bf16: $ssl_bf16) into data/ssl/$feature_tag"
    need 2 fbank $(cuts_of $train_parts $dev_parts $test_parts)
    need_ssl_checkpoint
    # Recordings over 30 s are encoded in windows with 2 s of context on each side (bounded memory).
    if stage_begin "SSL features $feature_tag" "data/ssl/.$feature_tag.json" --options layer="$ssl_layer" \
         bf16="$ssl_bf16" max_segment_seconds=30 context_seconds=2 --outputs "data/ssl/$feature_tag"; then
      python -m w2v.bin.compute_ssl_features --checkpoint "$ssl_checkpoint" --layer "$ssl_layer" \
        --bf16 "$ssl_bf16" --cuts $(cuts_of $train_parts $dev_parts $test_parts) \
        --out-dir "data/ssl/$feature_tag" --device "$device" --nj "$nj" \
        --max-segment-seconds 30 --context-seconds 2
      stage_end
    fi
  else
    log "Stage 8: --feature-type $feature_type, no SSL features to extract"
  fi
fi

if [ $stage -le 9 ] && [ $stop_stage -ge 9 ]; then
  log "Stage 9: train CTC on $feature_tag in $exp_dir ($([ "$num_epochs" = auto ] &&
    echo "until the dev loss stops improving for $patience epochs and $patience_updates updates, at most $max_epochs" || echo "$num_epochs epochs"), $world_size process(es))"
  set_train_cuts
  need_feat_cuts $dev_parts
  need 4 lang "$lang_dir/tokens.txt"
  [ "$token_type" != bpe ] || need 3 bpe "$lang_dir/bpe.model"
  [ "$feature_type" = fbank ] || [ "$feature_type" = ssl ] || need_ssl_checkpoint
  finetune_options=$([ "$feature_type" != ssl-finetune ] || echo "ssl_freeze_updates=$ssl_freeze_updates ssl_lr_scale=$ssl_lr_scale")
  # A change of data, tokens or features trains anew (the old exp dir is moved aside); otherwise
  # training continues from the newest checkpoint that loads (nothing to do: it says so).
  if [ "$node_rank" != 0 ] || stage_begin "train $feature_tag" "$(dirname "$exp_dir")/.$(basename "$exp_dir").train.json" \
       --options feature_type="$feature_tag" token_type="$token_type" model_size="$model_size" \
       num_decoder_layers="$num_decoder_layers" ctc_weight="$ctc_weight" max_duration="$max_duration" \
       label_budget="$label_budget" $finetune_options --progress num_epochs="$num_epochs" max_epochs="$max_epochs" patience="$patience" patience_updates="$patience_updates" keep_last_k="$keep_last_k" \
       --outputs "$exp_dir" --replace archive --resumable; then
    $launcher -m w2v.bin.train --exp-dir "$exp_dir" --lang-dir "$lang_dir" \
      --train-cuts $train_cuts --dev-cuts $(feat_cuts_of $dev_parts) \
      --num-epochs "$num_epochs" --max-epochs "$max_epochs" --patience "$patience" --patience-updates "$patience_updates" --keep-last-k "$keep_last_k" --save-every-n "$save_every_n" \
      --max-duration "$max_duration" --model-size "$model_size" --device "$device" --amp "$amp" \
      --num-decoder-layers "$num_decoder_layers" --ctc-weight "$ctc_weight" \
      --feature-type "$feature_tag" --token-type "$token_type" $ssl_train_args
    [ "$node_rank" != 0 ] || stage_end
  fi
fi

if [ $stage -le 10 ] && [ $stop_stage -ge 10 ]; then
  if [ "$epoch" = last ]; then  # --num-epochs auto: where training stopped
    epoch=$(ls "$exp_dir" 2>/dev/null | sed -n 's/^epoch-\([0-9]*\)\.pt$/\1/p' | sort -n | tail -1)
    [ -n "$epoch" ] || need 9 train "$exp_dir/epoch-N.pt"
    [ "$avg" -le "$epoch" ] || die "--avg $avg needs $avg epochs, but training stopped after epoch $epoch: give --avg ≤ $epoch"
  fi
  # dev too: the report chooses LM scales on dev and applies them to test
  log "Stage 10: decode $test_parts (and $dev_parts) with epoch $epoch avg $avg: $decoding_method"
  # The averaged model is exported once (model only, loads without the exp dir); it stays
  # usable after --keep-last-k has removed the epochs it came from.
  model="$exp_dir/pretrained-epoch-${epoch}-avg-${avg}.pt"
  epochs=$(for e in $(seq $((epoch - avg + 1)) "$epoch"); do echo "$exp_dir/epoch-$e.pt"; done)
  if [ ! -f "$model" ] || ls $epochs >/dev/null 2>&1; then
    need 9 train $epochs
    if stage_begin "average epoch $epoch avg $avg" "$exp_dir/.pretrained-epoch-${epoch}-avg-${avg}.json" \
         --outputs "$model"; then
      python -m w2v.bin.export_model --exp-dir "$exp_dir" --epoch "$epoch" --avg "$avg" --out "$model"
      stage_end
    fi
  fi
  need 9 train "$model"
  need_feat_cuts $test_parts $dev_parts
  case " $decoding_method " in *" 1best "*|*" nbest"*|*" whole-lattice"*) need 6 graph "$lang_dir/HLG.pt" ;; esac
  case " $decoding_method " in *-rescoring*) need 6 graph "$lm_dir/G_4_gram.pt" ;; esac
  if stage_begin "decode epoch $epoch avg $avg" "$exp_dir/.decode-epoch-${epoch}-avg-${avg}.json" \
       --options decoding_method="$decoding_method" lm_scales="$lm_scales" search_beam="$search_beam" \
       max_active_states="$max_active_states"; then
    # --world-size processes (on this node) share the batches; recordings over 60 s go in windows
    decoder="python"
    [ "$world_size" -le 1 ] || decoder="torchrun --standalone --nproc-per-node $world_size"
    $decoder -m w2v.bin.decode --checkpoint "$model" --exp-dir "$exp_dir" --epoch "$epoch" --avg "$avg" \
      --lang-dir "$lang_dir" --lm-dir "$lm_dir" --feature-type "$feature_tag" --device "$device" \
      $(for p in $(feat_cuts_of $test_parts $dev_parts); do echo --cuts $p; done) \
      --label-budget "$label_budget" --train-cuts $(budget_cuts) \
      $(for m in $decoding_method; do echo --decoding-method $m; done) \
      --max-duration 400 --lm-scales "$lm_scales" \
      --search-beam "$search_beam" --max-active-states "$max_active_states"
    stage_end
  fi
fi

if [ $stage -le 11 ] && [ $stop_stage -ge 11 ]; then
  log "Stage 11: report ($exp_dir/RESULTS.md)"
  [ -f "$exp_dir/RESULTS.md" ] || [ -n "$(ls exp/ctc_*/results.json 2>/dev/null)" ] ||
    die "no $exp_dir/RESULTS.md: stage 10 (decode) writes it; run ./run.sh --stage 10 first"
  [ ! -f "$exp_dir/RESULTS.md" ] || cat "$exp_dir/RESULTS.md"
  # Every CTC run of this recipe side by side, fbank first: what the feature swap changed.
  runs=
  for d in exp/ctc_fbank $(ls -d exp/ctc_* | grep -vx exp/ctc_fbank | LC_ALL=C sort || true); do
    if [ -f "$d/results.json" ]; then runs="$runs $d"; fi
  done
  if [ -n "$runs" ]; then  # one run too: its table with the LM scales chosen on dev
    log "  comparison of$runs in exp/COMPARISON.md"
    python -m w2v.bin.compare_results $runs --dev-sets $dev_parts --out exp/COMPARISON.md
  fi
fi
