# Stages 5-11 of every CTC recipe (LM, graph, SSL pretraining, SSL features, training, decoding,
# report), sourced by egs/<corpus>/run.sh after its corpus-specific stages 0-4. Expects from the
# recipe: stage, stop_stage, lang_dir, lm_dir, token_type (bpe|char), train/dev/test_parts,
# cuts_of (the fbank cuts of parts), log, and the options declared there (lm_arpa, rescore_arpa,
# ssl_model, ssl_steps, feature_type, ssl_checkpoint, ssl_layer, ssl_bf16, exp_dir, num_epochs,
# max_duration, world_size, epoch, avg, decoding_method, lm_scales, search_beam,
# max_active_states).

# --feature-type, with --ssl-checkpoint (default: what stage 7 pretrained):
#   fbank         stage 2's fbank
#   ssl           layer --ssl-layer, extracted once in stage 8 into data/ssl/<tag>/
#   ssl-weighted  frozen encoder on the fly, a learned weighted sum of all its layers
#   ssl-finetune  encoder on the fly and trained (layer --ssl-layer; 0 = weighted sum)
ssl_train_args=
case "$feature_type" in
  fbank) feature_tag=fbank ;;
  ssl|ssl-weighted|ssl-finetune)
    ssl_checkpoint=${ssl_checkpoint:-exp/ssl_${ssl_model:-wav2vec2}}
    ckpt_name=$(basename "$ssl_checkpoint"); ckpt_name=${ckpt_name%.pt}
    bf16_tag=$([ "$ssl_bf16" = true ] && echo _bf16 || true)
    case "$feature_type" in
      ssl) feature_tag=${ckpt_name}_L${ssl_layer}${bf16_tag} ;;
      ssl-weighted)
        feature_tag=${ckpt_name}_weighted${bf16_tag}
        ssl_train_args="--ssl-checkpoint $ssl_checkpoint --ssl-layer 0 --ssl-bf16 $ssl_bf16" ;;
      ssl-finetune)
        feature_tag=${ckpt_name}_finetune_$([ "$ssl_layer" = 0 ] && echo weighted || echo L$ssl_layer)${bf16_tag}
        ssl_train_args="--ssl-checkpoint $ssl_checkpoint --ssl-layer $ssl_layer --ssl-finetune true --ssl-bf16 $ssl_bf16" ;;
    esac
    ;;
  *) log "ERROR: --feature-type must be fbank, ssl, ssl-weighted or ssl-finetune, got '$feature_type'"; exit 1 ;;
esac
exp_dir=${exp_dir:-exp/ctc_${feature_tag}}
# The cuts that stages 9-10 read: fbank's (their audio, for the on-the-fly types), or SSL copies.
feat_cuts_of() {
  for c in $(cuts_of "$@"); do
    if [ "$feature_type" = ssl ]; then echo "data/ssl/$feature_tag/$(basename "$c")"; else echo "$c"; fi
  done
}

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
  if [ "$feature_type" = ssl ]; then
    log "Stage 8: layer $ssl_layer of $ssl_checkpoint as features (bf16: $ssl_bf16) into data/ssl/$feature_tag"
    python -m w2v.bin.compute_ssl_features --checkpoint "$ssl_checkpoint" --layer "$ssl_layer" \
      --bf16 "$ssl_bf16" --cuts $(cuts_of $train_parts $dev_parts $test_parts) \
      --out-dir "data/ssl/$feature_tag"
  else
    log "Stage 8: --feature-type $feature_type, no SSL features to extract"
  fi
fi

if [ $stage -le 9 ] && [ $stop_stage -ge 9 ]; then
  log "Stage 9: train CTC on $feature_tag in $exp_dir ($num_epochs epochs, $world_size process(es))"
  launcher="python"
  [ "$world_size" -gt 1 ] && launcher="torchrun --standalone --nproc_per_node $world_size"
  start_epoch=1
  while [ -f "$exp_dir/epoch-${start_epoch}.pt" ]; do start_epoch=$((start_epoch + 1)); done
  if [ $start_epoch -gt "$num_epochs" ]; then
    log "  $exp_dir already holds epoch-${num_epochs}.pt, skipping"
  else
    [ $start_epoch -gt 1 ] && log "  resuming from epoch-$((start_epoch - 1)).pt"
    $launcher -m w2v.bin.train --exp-dir "$exp_dir" --lang-dir "$lang_dir" \
      --train-cuts $(feat_cuts_of $train_parts) --dev-cuts $(feat_cuts_of $dev_parts) \
      --num-epochs "$num_epochs" --start-epoch $start_epoch --max-duration "$max_duration" \
      --feature-type "$feature_tag" --token-type "$token_type" $ssl_train_args
  fi
fi

if [ $stage -le 10 ] && [ $stop_stage -ge 10 ]; then
  log "Stage 10: decode $test_parts with: $decoding_method"
  python -m w2v.bin.decode --exp-dir "$exp_dir" --epoch "$epoch" --avg "$avg" \
    --lang-dir "$lang_dir" --lm-dir "$lm_dir" --feature-type "$feature_tag" \
    $(for p in $(feat_cuts_of $test_parts); do echo --cuts $p; done) \
    $(for m in $decoding_method; do echo --decoding-method $m; done) \
    --max-duration 400 --lm-scales "$lm_scales" \
    --search-beam "$search_beam" --max-active-states "$max_active_states"
fi

if [ $stage -le 11 ] && [ $stop_stage -ge 11 ]; then
  log "Stage 11: report ($exp_dir/RESULTS.md)"
  cat "$exp_dir/RESULTS.md"
  # Every CTC run of this recipe side by side, fbank first: what the feature swap changed.
  runs=
  for d in exp/ctc_fbank $(ls -d exp/ctc_* | grep -vx exp/ctc_fbank | LC_ALL=C sort || true); do
    if [ -f "$d/results.json" ]; then runs="$runs $d"; fi
  done
  if [ "$(echo $runs | wc -w)" -gt 1 ]; then
    log "  comparison of$runs in exp/COMPARISON.md"
    python -m w2v.bin.compare_results $runs --out exp/COMPARISON.md
  fi
fi
