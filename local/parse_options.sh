# Kaldi-style option parsing, sourced by every run.sh after it declares its defaults.
#
# Usage (inside a script):
#   stage=0
#   exp_dir=exp
#   . local/parse_options.sh
#
# `--exp-dir DIR` sets $exp_dir (hyphens become underscores). A flag that names no
# variable declared before sourcing is an error, so a typo never passes silently.
# `--help` / `-h` prints the Usage block at the top of the calling script (the lines
# starting with "# " up to the first blank line) and exits.

_w2v_usage() {
  sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      _w2v_usage
      exit 0
      ;;
    --*=*)
      _w2v_name="${1%%=*}"; _w2v_value="${1#*=}"; shift
      ;;
    --*)
      _w2v_name="$1"
      if [ $# -lt 2 ]; then
        echo "$0: option $_w2v_name needs a value" >&2
        exit 1
      fi
      _w2v_value="$2"; shift 2
      ;;
    *)
      break
      ;;
  esac
  _w2v_var=$(echo "${_w2v_name#--}" | tr '-' '_')
  if ! [[ "$_w2v_var" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || [ -z "${!_w2v_var+x}" ]; then
    echo "$0: unknown option $_w2v_name (run $0 --help for the list)" >&2
    exit 1
  fi
  printf -v "$_w2v_var" '%s' "$_w2v_value"
done
unset _w2v_name _w2v_value _w2v_var
