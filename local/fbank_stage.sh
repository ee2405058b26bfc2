# Stage 2 of every recipe: 80-dim fbank per part into data/fbank/ (speed perturbation on train*
# parts with --speed-perturb true), each part under its own stage record. Sourced by
# egs/<corpus>/run.sh between its stages 1 and 3; needs $corpus and the recipe's options.

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: fbank"
  for part in $all_parts; do
    sp=$([ "$speed_perturb" = true ] && [[ $part == train* ]] && echo true || echo false)
    need 1 manifests $(manifests_of $part)
    if stage_begin "fbank $part" "data/fbank/.${corpus}_cuts_$part.json" --options speed_perturb=$sp \
         --outputs $(cuts_of $part) "data/fbank/${corpus}_feats_$part"; then
      python -m w2v.bin.compute_fbank --manifest-dir data/manifests --prefix $corpus \
        --parts "$part" --out-dir data/fbank --speed-perturb "$sp" --nj "$nj"
      stage_end
    fi
  done
fi
