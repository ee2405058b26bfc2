# Kaldi-style option parsing, sourced by every run.sh after it declares its defaults.
#
# Usage (inside a script):
#   stage=0
#   exp_dir=exp
#   . local/parse_options.sh
#
# `--exp-dir DIR` (or `--exp-dir=DIR`) sets $exp_dir (hyphens become underscores). Only the
# variables the calling script assigns at the start of a line before sourcing this file are
# options: an unknown or misspelled flag, a variable that merely exists in the environment
# (`--HOME /x`), a single-dash flag (`-stage 5`) and a word that is no option are errors, so a typo
# never runs the whole recipe with the defaults. `--help` / `-h` prints the Usage block at the top
# of the calling script (the lines starting with "# " up to the first blank line) and exits.
# Sets $w2v_command, the command line as given (stage records name the run that built them).

_w2v_usage() {
  sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
}

w2v_command="$0${*:+ $*}"
w2v_argv=("$@")  # as given: a sweep reruns the recipe with them
# The recipe's own options: NAME= at the start of a line, before the line sourcing this file.
_w2v_options=" $(sed -n '/^\. .*parse_options\.sh/q; s/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' "$0" | tr '\n' ' ')"

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      _w2v_usage
      exit 0
      ;;
    --*=*)
      _w2v_name="${1%%=*}"; _w2v_value="${1#*=}"; shift
      ;;
    --?*)
      _w2v_name="$1"
      if [ $# -lt 2 ]; then
        echo "$0: option $_w2v_name needs a value" >&2
        exit 1
      fi
      _w2v_value="$2"; shift 2
      ;;
    -?*)
      echo "$0: options take two dashes: $1 -> -$1 (run $0 --help for the list)" >&2
      exit 1
      ;;
    *)
      echo "$0: unexpected argument '$1': every setting is an option (--name value; run $0 --help)" >&2
      exit 1
      ;;
  esac
  _w2v_var=$(echo "${_w2v_name#--}" | tr '-' '_')
  if [[ "$_w2v_options" != *" $_w2v_var "* ]]; then
    echo "$0: unknown option $_w2v_name (run $0 --help for the list)" >&2
    exit 1
  fi
  printf -v "$_w2v_var" '%s' "$_w2v_value"
done
unset _w2v_name _w2v_value _w2v_var _w2v_options
