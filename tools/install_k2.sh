#!/usr/bin/env bash
# Install k2 built for exactly the torch in the active Python environment.
#
# Usage: tools/install_k2.sh [--python PY] [--wheelhouse DIR] [--route auto|wheelhouse|index|source]
#                            [--device cpu|cuda] [--check-only]
#
# Routes, tried in this order by --route auto (the default):
#   0. nothing to do: an importable k2 that was built against the installed torch version;
#   1. wheelhouse: a k2 wheel for this torch and Python in $K2_WHEELHOUSE (default ../shared/wheels
#      beside the checkout; a wheel's local tag must read +cpu.torch<X.Y.Z> or +cuda*.torch<X.Y.Z>).
# Routes a user elsewhere has, performed only when asked for by name (they need the network):
#   2. --route index: k2's own wheel index (https://k2-fsa.github.io/k2/cpu.html, cuda.html); picks
#      the newest wheel whose tag matches this torch and CPython version;
#   3. --route source: clone k2-fsa/k2 at $K2_COMMIT and build a wheel (CPU unless --device cuda),
#      with the fixes torch >= 2.10 needs (C++20 and two source patches), then install it.
# After installing, k2 is proven to work (H = k2.ctc_topo, k2.ctc_loss equal to torch's CTC loss);
# any failure exits non-zero with the reason.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
wheelhouse=${K2_WHEELHOUSE:-$here/../shared/wheels}
route=auto
device=cpu
check_only=false
k2_repo=${K2_REPO:-https://github.com/k2-fsa/k2.git}
k2_commit=${K2_COMMIT:-a741ae88}

while [ $# -gt 0 ]; do
  case "$1" in
    --python) python=$2; shift 2 ;;
    --wheelhouse) wheelhouse=$2; shift 2 ;;
    --route) route=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --check-only) check_only=true; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "install_k2.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$route" in auto|wheelhouse|index|source) ;; *)
  echo "install_k2.sh: --route must be auto, wheelhouse, index or source, not '$route'" >&2; exit 2 ;;
esac

log() { echo "[install_k2] $*" >&2; }
die() { echo "[install_k2] ERROR: $*" >&2; exit 1; }

torch_version=$("$python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null) \
  || die "torch is not importable with $python; install the pinned stack first (make install)"
py_tag=$("$python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')

# Prints the torch version k2 was built against, or nothing when k2 is not importable.
k2_torch_version() {
  "$python" - <<'EOF' 2>/dev/null || true
import re, subprocess, sys
out = subprocess.run([sys.executable, "-m", "k2.version"], capture_output=True, text=True).stdout
m = re.search(r"PyTorch version used to build k2:\s*(\S+)", out)
print(m.group(1).split("+")[0] if m else "")
EOF
}

prove() {
  "$python" - <<'EOF' || die "k2 is installed but does not work with this torch (see the error above)"
import torch, k2
torch.manual_seed(0)
H = k2.ctc_topo(max_token=4)
assert H.num_arcs > 0, "empty CTC topology"
T, V = 7, 5
log_probs = torch.randn(1, T, V).log_softmax(-1)
targets = [[1, 3, 3]]
dense = k2.DenseFsaVec(log_probs, torch.tensor([[0, 0, T]], dtype=torch.int32))
graph = k2.ctc_graph(targets, modified=False)
k2_loss = k2.ctc_loss(decoding_graph=graph, dense_fsa_vec=dense, output_beam=100, reduction="sum")
ref = torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), torch.tensor(targets),
                                   torch.tensor([T]), torch.tensor([3]), reduction="sum")
assert abs(k2_loss.item() - ref.item()) < 1e-4, f"k2.ctc_loss {k2_loss.item()} != torch {ref.item()}"
print(f"[install_k2] k2 works: ctc_loss {k2_loss.item():.5f} == torch {ref.item():.5f}")
EOF
}

have=$(k2_torch_version)
if [ -n "$have" ]; then
  if [ "$have" = "$torch_version" ]; then
    log "k2 (built for torch $have) is already installed"
    prove
    exit 0
  fi
  log "the installed k2 was built for torch $have, but torch $torch_version is installed: replacing it"
  [ "$check_only" = true ] && die "k2 built for torch $have does not match torch $torch_version"
elif [ "$check_only" = true ]; then
  die "k2 is not importable with $python"
fi

install_from_wheelhouse() {
  if [ ! -d "$wheelhouse" ]; then
    log "no wheelhouse at $wheelhouse (set K2_WHEELHOUSE or --wheelhouse to a directory of k2 wheels)"
    return 1
  fi
  local whl
  whl=$(ls "$wheelhouse"/k2-*torch"${torch_version}"-"${py_tag}"-*.whl 2>/dev/null | sort | tail -n 1 || true)
  if [ -z "$whl" ]; then
    log "wheelhouse $wheelhouse has no k2 wheel for torch $torch_version / $py_tag; it holds:"
    ls "$wheelhouse" | sed 's/^/    /' >&2 || true
    return 1
  fi
  log "installing $whl"
  "$python" -m pip install --no-deps --force-reinstall -q "$whl"
}

install_from_index() {
  local page url
  page=https://k2-fsa.github.io/k2/$([ "$device" = cuda ] && echo cuda || echo cpu).html
  log "looking for a k2 wheel for torch $torch_version / $py_tag on $page"
  url=$("$python" - "$page" "$torch_version" "$py_tag" <<'EOF'
import re, sys, urllib.request
page, torch_version, py_tag = sys.argv[1:]
html = urllib.request.urlopen(page, timeout=60).read().decode()
links = re.findall(r'href="([^"]+\.whl)"', html)
pat = re.compile(rf"torch{re.escape(torch_version)}-{py_tag}-{py_tag}-(manylinux|linux)[^/]*x86_64\.whl$")
hits = sorted(u for u in links if pat.search(u.split("/")[-1].replace("%2B", "+")))
print(hits[-1] if hits else "")
EOF
) || die "could not read $page (offline?)"
  [ -n "$url" ] || die "$page lists no k2 wheel for torch $torch_version and $py_tag; use --route source"
  log "installing $url"
  "$python" -m pip install --no-deps --force-reinstall "$url"
}

install_from_source() {
  local src=${K2_SRC:-$here/tools/k2-src}
  command -v cmake >/dev/null || die "building k2 needs cmake"
  if [ ! -d "$src/.git" ]; then
    git clone "$k2_repo" "$src"
  fi
  git -C "$src" checkout -q "$k2_commit"
  # torch >= 2.10 headers need C++20; two constructs k2 @ a741ae88 relies on stop compiling there.
  "$python" "$here/tools/k2_source_patches.py" "$src"
  local cmake_args="-DK2_WITH_CUDA=$([ "$device" = cuda ] && echo ON || echo OFF) -DCMAKE_BUILD_TYPE=Release"
  cmake_args="$cmake_args -DK2_ENABLE_TESTS=OFF -DK2_BUILD_FOR_ALL_ARCHS=ON"
  log "building k2 from $src ($device; takes about 8 minutes on 2 cores)"
  (cd "$src" && rm -rf dist && K2_CMAKE_ARGS="$cmake_args" K2_MAKE_ARGS="-j$(nproc)" \
    "$python" setup.py bdist_wheel >&2)
  "$python" -m pip install --no-deps --force-reinstall "$src"/dist/k2-*.whl
}

case "$route" in
  auto)
    install_from_wheelhouse || die "no usable k2 wheel for torch $torch_version ($py_tag).
  Other routes (need the network):
    $0 --route index [--device cuda]   # k2's wheel index for your torch
    $0 --route source [--device cuda]  # build from k2's source (about 8 minutes on 2 cores)
  or point K2_WHEELHOUSE at a directory holding k2-*+cpu.torch${torch_version}-${py_tag}-*.whl" ;;
  wheelhouse) install_from_wheelhouse || die "wheelhouse route failed" ;;
  index) install_from_index ;;
  source) install_from_source ;;
esac

have=$(k2_torch_version)
[ "$have" = "$torch_version" ] || die "after install, k2 reports torch '${have:-?}', not $torch_version"
prove
