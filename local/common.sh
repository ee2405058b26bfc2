# Shell helpers of every recipe, sourced by run.sh after parse_options.sh: logging, option checks
# (all before stage 0), and stage records with a lock per record (w2v/runtime/records.py).
#
# A stage that builds something reads like this:
#   need 1 manifests $(manifests_of $part)             # inputs, each made by an earlier stage
#   if stage_begin "fbank $part" data/fbank/.librispeech_cuts_$part.json \
#        --options speed_perturb=$sp --outputs data/fbank/librispeech_cuts_$part.jsonl.gz; then
#     python -m w2v.bin.compute_fbank ...               # runs unless built from the same inputs
#     stage_end
#   fi

# The data of parts, named as every recipe names them ($corpus: librispeech, aishell).
cuts_of() { for p in "$@"; do echo "data/fbank/${corpus}_cuts_${p}.jsonl.gz"; done; }
manifests_of() { for p in "$@"; do echo data/manifests/${corpus}_{recordings,supervisions}_${p}.jsonl.gz; done; }

log() { echo -e "$(date '+%Y-%m-%d %H:%M:%S') ($(basename "${BASH_SOURCE[1]}"):${BASH_LINENO[0]}) $*"; }
die() { echo -e "$(date '+%Y-%m-%d %H:%M:%S') ($(basename "${BASH_SOURCE[1]}"):${BASH_LINENO[0]}) ERROR: $*" >&2; exit 1; }

command -v flock >/dev/null || die "the recipes need flock (util-linux) to lock what a stage builds"

# ------------------------------------------------------------------------------- option checks
# Each takes variable names and names the flag in its message: check_int num_epochs → --num-epochs.

_flag() { echo "--${1//_/-}"; }
check_int() { local v; for v; do [[ ${!v} =~ ^[0-9]+$ ]] || die "$(_flag $v) must be a whole number, got '${!v}'"; done; }
check_positive_int() {
  local v; for v; do [[ ${!v} =~ ^[0-9]+$ ]] && [ "${!v}" -gt 0 ] || die "$(_flag $v) must be a whole number > 0, got '${!v}'"; done
}
check_number() {
  local v; for v; do
    [[ ${!v} =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]] && [[ ${!v} =~ [1-9] ]] || die "$(_flag $v) must be a number > 0, got '${!v}'"
  done
}
check_bool() { local v; for v; do [[ ${!v} == true || ${!v} == false ]] || die "$(_flag $v) must be true or false, got '${!v}'"; done; }
# check_choice VAR CHOICE...: every word of $VAR is one of the choices (lists: --decoding-method "a b")
check_choice() {
  local v=$1 w; shift
  [ -n "${!v}" ] || die "$(_flag $v) is empty; choose from: $*"
  for w in ${!v}; do [[ " $* " == *" $w "* ]] || die "$(_flag $v): '$w' is not one of: $*"; done
}
check_file() { local v; for v; do [ -z "${!v}" ] || [ -f "${!v}" ] || die "$(_flag $v) ${!v}: no such file"; done; }

# ------------------------------------------------------------------------------- stage records
_stage_inputs=()

# need STAGE WHAT FILE...: FILEs are inputs of the next stage_begin. A missing one is named with
# the stage that makes it (STAGE a number), or the option that gave it (STAGE like --lm-arpa).
need() {
  local from=$1 what=$2 f; shift 2
  for f; do
    if [ ! -e "$f" ]; then
      if [[ $from =~ ^[0-9]+$ ]]; then
        die "this stage needs $f, which stage $from ($what) makes: run ./run.sh --stage $from first, with the same options"
      fi
      die "$from $f does not exist"
    fi
    _stage_inputs+=("$f")
  done
}

# stage_begin NAME RECORD [--options k=v ...] [--progress k=v ...] [--outputs PATH ...] [--replace archive]
# Locks RECORD (a second run building the same thing stops, naming the first), then compares what
# the stage would be built from (the needed inputs, the options) with RECORD. Returns 1 when it is
# up to date; otherwise logs why it runs, clears outdated outputs and returns 0: run the stage's
# commands, then stage_end.
stage_begin() {
  local name=$1 record=$2 out rc=0
  shift 2
  mkdir -p "$(dirname "$record")"
  exec {_stage_lock}>>"$record.lock"
  if ! flock -n "$_stage_lock"; then
    die "$name: another run is building this now ($(cat "$record.lock" 2>/dev/null)); wait for it or stop it"
  fi
  echo "pid $$ since $(date '+%Y-%m-%d %H:%M:%S'): $w2v_command" > "$record.lock"
  out=$(python -m w2v.bin.stage_record begin --record "$record" --stage "$name" --pid $$ \
          --command "$w2v_command" --inputs "${_stage_inputs[@]}" "$@") || rc=$?
  _stage_inputs=()
  [ $rc -eq 0 ] || die "$name: cannot check its stage record $record"
  _stage_record=$record
  case "$out" in
    skip:*) log "  $name: up to date (${out#skip: }), skipping"; exec {_stage_lock}>&-; return 1 ;;
    *) log "  $name: $out"; return 0 ;;
  esac
}

# stage_end: the stage's outputs are complete; records it as done and releases its lock.
stage_end() {
  python -m w2v.bin.stage_record finish --record "$_stage_record" || die "$_stage_record: cannot finish"
  exec {_stage_lock}>&-
}
