# Sourced by every run.sh: use the project virtualenv (made by `make install`) when there is one,
# and make the w2v package importable from a source checkout.
_w2v_root=$(cd -P "$(dirname "${BASH_SOURCE[0]}")" && cd .. && pwd)
if [ -x "$_w2v_root/.venv/bin/python" ]; then
  export PATH="$_w2v_root/.venv/bin:$PATH"
fi
export PYTHONPATH="$_w2v_root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
unset _w2v_root
