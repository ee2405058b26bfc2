# Stages 5-10 of every CTC recipe (LM, graph, SSL pretraining, training, decoding, report),
# sourced by egs/<corpus>/run.sh after its corpus-specific stages 0-4. Expects from the recipe:
# stage, stop_stage, lang_dir, lm_dir, token_type (bpe|char), train/dev/test_parts, cuts_of,
# log, and the options declared there (lm_arpa, rescore_arpa, ssl_model, ssl_steps, exp_dir,
# feature_type, num_epochs, max_duration, world_size, epoch, avg, decoding_method, lm_scales,
# search_beam, max_active_states).

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: n-gram LMs and G in $lm_dir"
  mkdir -p "$lm_dir"
  for order in 3 4; do
    given=$([ $order = 3 ] && echo "$lm_arpa" || echo "$rescore_arpa")
    if [ -f "$lm_dir/G_${order}_gram.fst.txt" ]; then
      log "  G_${order}_gram.fst.txt exists, skipping"
    elif [ -n "$given" ]; then
      python -m w2v.bin.train_lm --lm-arpa "$given" --order $order --out "$lm_dir/${order}gram.arpa" \
        --words "$lang_dir/words.txt"
    else
      python -m w2v.bin.train_lm --text "$lang_dir/transcript_words.txt" --order $order \
        --out "$lm_dir/${order}gram.arpa" --words "$lang_dir/words.txt"
    fi
  done
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: HLG"
  python -m w2v.bin.compile_graph --lang-dir "$lang_dir" --lm-dir "$lm_dir"
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  if [ -n "$ssl_model" ]; then
    log "Stage 7: self-supervised pretraining of $ssl_model ($ssl_steps updates)"
    python -m w2v.bin.pretrain --ssl-model "$ssl_model" --size tiny \
      --cuts $(cuts_of $train_parts) --exp-dir "exp/ssl_${ssl_model}" --num-steps "$ssl_steps" \
      --max-duration 24 --crop-seconds 3
  else
    log "Stage 7: no --ssl-model given, skipping pretraining"
  fi
fi

if [ $stage -le 8 ] && [ $stop_stage -ge 8 ]; then
  log "Stage 8: train CTC on $feature_type in $exp_dir ($num_epochs epochs, $world_size process(es))"
  launcher="python"
  [ "$world_size" -gt 1 ] && launcher="torchrun --standalone --nproc_per_node $world_size"
  start_epoch=1
  while [ -f "$exp_dir/epoch-${start_epoch}.pt" ]; do start_epoch=$((start_epoch + 1)); done
  if [ $start_epoch -gt "$num_epochs" ]; then
    log "  $exp_dir already holds epoch-${num_epochs}.pt, skipping"
  else
    [ $start_epoch -gt 1 ] && log "  resuming from epoch-$((start_epoch - 1)).pt"
    $launcher -m w2v.bin.train --exp-dir "$exp_dir" --lang-dir "$lang_dir" \
      --train-cuts $(cuts_of $train_parts) --dev-cuts $(cuts_of $dev_parts) \
      --num-epochs "$num_epochs" --start-epoch $start_epoch --max-duration "$max_duration" \
      --feature-type "$feature_type" --token-type "$token_type"
  fi
fi

if [ $stage -le 9 ] && [ $stop_stage -ge 9 ]; then
  log "Stage 9: decode $test_parts with: $decoding_method"
  python -m w2v.bin.decode --exp-dir "$exp_dir" --epoch "$epoch" --avg "$avg" \
    --lang-dir "$lang_dir" --lm-dir "$lm_dir" --feature-type "$feature_type" \
    $(for p in $(cuts_of $test_parts); do echo --cuts $p; done) \
    $(for m in $decoding_method; do echo --decoding-method $m; done) \
    --max-duration 400 --lm-scales "$lm_scales" \
    --search-beam "$search_beam" --max-active-states "$max_active_states"
fi

if [ $stage -le 10 ] && [ $stop_stage -ge 10 ]; then
  log "Stage 10: report ($exp_dir/RESULTS.md)"
  cat "$exp_dir/RESULTS.md"
fi
