# Options every CTC recipe shares: checked here, before stage 0, so that a bad value costs seconds,
# not the hours of the stages before the one that reads it; then the names derived from them.
# Sourced by egs/<corpus>/run.sh right after local/common.sh. The lists below are the ones the
# Python side accepts (tests/recipes/test_recipe_bookkeeping.py holds them equal).

known_ssl_models="wav2vec vq_wav2vec wav2vec2 data2vec hubert wavlm"
ssl_sizes="tiny small base large"
model_sizes="demo medium large linear"
decoding_methods="ctc-greedy-search ctc-decoding 1best nbest nbest-rescoring whole-lattice-rescoring ctc-prefix-beam-search attention attention-rescoring attention-decoder"

check_int stage stop_stage synth_seed ssl_layer save_every_n node_rank ssl_freeze_updates patience_updates
check_positive_int nj max_epochs patience world_size avg keep_last_k search_beam max_active_states ssl_steps nnodes master_port
check_number max_duration ctc_weight ssl_lr_scale
check_int num_decoder_layers
check_bool download speed_perturb ssl_bf16 resample
check_choice synth_size tiny mini small
check_choice ssl_size $ssl_sizes
check_choice feature_type fbank ssl ssl-weighted ssl-finetune
[ -z "$feature_types" ] || check_choice feature_types fbank ssl ssl-weighted ssl-finetune
[[ $synth_unlabeled_minutes =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]] ||
  die "--synth-unlabeled-minutes must be a number ≥ 0, got '$synth_unlabeled_minutes'"
[[ $ssl_layers =~ ^(all|[0-9 ]*)$ ]] || die "--ssl-layers must be layer numbers or all, got '$ssl_layers'"
for b in $label_budget $label_budgets; do
  [[ $b =~ ^(all|([0-9]+\.?[0-9]*|\.[0-9]+)[mh]?)$ ]] && [[ $b =~ ^all$|[1-9] ]] ||
    die "--label-budget(s): '$b' is not a budget: 10m, 1h, 10h, <N>m, <N>h, a number of minutes, or all"
done
check_choice model_size $model_sizes
check_choice amp none bf16 fp16
[[ $device =~ ^(auto|cpu|cuda(:[0-9]+)?)$ ]] || die "--device must be auto, cpu, cuda or cuda:N, got '$device'"
[ "$node_rank" -lt "$nnodes" ] || die "--node-rank $node_rank must be below --nnodes $nnodes"
if [ "$num_decoder_layers" = 0 ]; then
  for m in ctc-prefix-beam-search attention attention-rescoring attention-decoder; do
    [[ " $decoding_method " != *" $m "* ]] || [ "$m" = ctc-prefix-beam-search ] ||
      die "--decoding-method $m needs an attention decoder: give --num-decoder-layers > 0"
  done
fi
check_choice decoding_method $decoding_methods
[ -z "$ssl_model" ] || check_choice ssl_model $known_ssl_models
[ -z "$ssl_models" ] || check_choice ssl_models $known_ssl_models
[ -z "$ssl_models" ] || [ -z "$ssl_checkpoint" ] ||
  die "--ssl-models pretrains each model in stage 7; give no --ssl-checkpoint with it"
check_file lm_arpa rescore_arpa
[[ $lm_scales =~ ^[0-9]*\.?[0-9]+(,[0-9]*\.?[0-9]+)*$ ]] || die "--lm-scales must be numbers separated by commas, got '$lm_scales'"
[ "$stage" -le "$stop_stage" ] || die "--stage $stage is after --stop-stage $stop_stage: nothing to run"
[ -z "$corpus_dir" ] || [ "$download" = false ] || die "--download true fetches the corpus itself; give it no --corpus-dir"
[ -z "$corpus_dir" ] || [ -d "$corpus_dir" ] || die "--corpus-dir $corpus_dir does not exist"

# --num-epochs auto: until the smoothed dev loss stops improving for --patience epochs and
# --patience-updates updates (at most --max-epochs); --epoch then defaults to the last epoch
# trained, found in stage 10.
[ "$num_epochs" = auto ] || check_positive_int num_epochs
[ -n "$epoch" ] || epoch=$([ "$num_epochs" = auto ] && echo last || echo "$num_epochs")
[ "$epoch" = last ] || check_positive_int epoch
if [ "$stage" -le 10 ] && [ "$stop_stage" -ge 10 ]; then
  if [ "$epoch" = last ]; then
    [ "$avg" -le "$keep_last_k" ] || die "--keep-last-k $keep_last_k keeps fewer epochs than --avg $avg averages"
  else
    [ "$avg" -le "$epoch" ] || die "--avg $avg needs $avg epochs up to --epoch $epoch: give --avg ≤ $epoch"
  fi
  if [ "$stage" -le 9 ] && [ "$num_epochs" != auto ] && [ "$epoch" != last ]; then
    [ "$epoch" -le "$num_epochs" ] || die "--epoch $epoch is after the last epoch trained (--num-epochs $num_epochs)"
    [ $((num_epochs - epoch + avg)) -le "$keep_last_k" ] ||
      die "--keep-last-k $keep_last_k keeps epochs $((num_epochs - keep_last_k + 1))..$num_epochs, but --epoch $epoch --avg $avg needs epochs $((epoch - avg + 1))..$epoch"
  fi
fi

# --feature-type, with --ssl-checkpoint (default: what stage 7 pretrained):
#   fbank         stage 2's fbank
#   ssl           layer --ssl-layer, extracted once in stage 8 into data/ssl/<tag>/
#   ssl-weighted  frozen encoder on the fly, a learned weighted sum of all its layers
#   ssl-finetune  encoder on the fly and trained (layer --ssl-layer; 0 = weighted sum)
ssl_train_args=
ssl_checkpoint=${ssl_checkpoint:-exp/ssl_${ssl_model:-wav2vec2}}
case "$feature_type" in
  fbank) feature_tag=fbank ;;
  *)
    ckpt_name=$(basename "$ssl_checkpoint"); ckpt_name=${ckpt_name%.pt}
    bf16_tag=$([ "$ssl_bf16" = true ] && echo _bf16 || true)
    case "$feature_type" in
      ssl) feature_tag=${ckpt_name}_L${ssl_layer}${bf16_tag} ;;
      ssl-weighted)
        feature_tag=${ckpt_name}_weighted${bf16_tag}
        ssl_train_args="--ssl-checkpoint $ssl_checkpoint --ssl-layer 0 --ssl-bf16 $ssl_bf16" ;;
      ssl-finetune)
        feature_tag=${ckpt_name}_finetune_$([ "$ssl_layer" = 0 ] && echo weighted || echo L$ssl_layer)${bf16_tag}
        ssl_train_args="--ssl-checkpoint $ssl_checkpoint --ssl-layer $ssl_layer --ssl-finetune true --ssl-bf16 $ssl_bf16"
        ssl_train_args="$ssl_train_args --ssl-freeze-updates $ssl_freeze_updates --ssl-lr-scale $ssl_lr_scale" ;;
    esac
    [ "$feature_type" != ssl ] || [ "$ssl_layer" -gt 0 ] || die "--feature-type ssl extracts one layer: give --ssl-layer ≥ 1"
    ;;
esac
# a label budget trains its own model beside the one on all labels
exp_dir=${exp_dir:-exp/ctc_${feature_tag}$([ "$label_budget" = all ] || echo "_$label_budget")}
