#!/usr/bin/env bash
# The GPU check: the tests marked cuda, then the tiny LibriSpeech recipe's stages 7-10 (pretraining,
# SSL features, CTC training, decoding) on the GPU, each timed. Prints a table; asserts nothing.
#
# Usage: bench/gpu_check.sh [--device cuda] [--amp bf16] [--workdir DIR]
#   PYTHON=... picks the interpreter (default: the project's .venv, else python3); it needs the
#   project's requirements and a k2 (a CPU k2 works: the lattice search then runs on the CPU and
#   the CTC loss through torch on the GPU).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
device=cuda amp=bf16 workdir=
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --amp) amp=$2; shift 2 ;;
    --workdir) workdir=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 1 ;;
  esac
done
python=${PYTHON:-$([ -x "$root/.venv/bin/python" ] && echo "$root/.venv/bin/python" || echo python3)}
export PATH="$(dirname "$python"):$PATH"
workdir=${workdir:-$(mktemp -d)}
command -v nvidia-smi >/dev/null && nvidia-smi -L || echo "no nvidia-smi"
"$python" -c "import torch, k2; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), '| k2 with cuda', k2.with_cuda)"

echo "== tests marked cuda"
(cd "$root" && "$python" -m pytest -q -p no:cacheprovider -m cuda -rs tests) || echo "(some cuda tests failed)"

recipe="$workdir/egs/librispeech"
mkdir -p "$recipe"
cp "$root/egs/librispeech/run.sh" "$recipe/"
ln -sfn "$root/local" "$recipe/local"
args=(--synth-size tiny --vocab-size 100 --ssl-model wav2vec2 --ssl-steps 200 --feature-type ssl
      --ssl-layer 2 --num-epochs 5 --avg 2 --decoding-method "ctc-greedy-search 1best"
      --device "$device" --amp "$amp")
times=()
run_timed() {  # label, run.sh arguments...
  local label=$1 start
  shift
  start=$(date +%s%N)
  (cd "$recipe" && ./run.sh "${args[@]}" "$@") > "$workdir/$label.log" 2>&1 || { tail -30 "$workdir/$label.log"; exit 1; }
  times+=("$label $(( ($(date +%s%N) - start) / 1000000 ))")
}
run_timed "stages-0-6(cpu)" --stop-stage 6
for s in 7 8 9 10; do run_timed "stage-$s" --stage $s --stop-stage $s; done

echo "== tiny recipe on $device (amp $amp), seconds per stage; logs in $workdir"
printf '%-18s %8s\n' stage seconds
for t in "${times[@]}"; do set -- $t; printf '%-18s %8d.%03d\n' "$1" $(($2 / 1000)) $(($2 % 1000)); done
cat "$recipe/exp/ctc_ssl_wav2vec2_L2/RESULTS.md"
