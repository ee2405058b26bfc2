"""Patch a k2 source tree (commit a741ae88) so that it builds against torch >= 2.10.

Usage: python tools/k2_source_patches.py K2_SOURCE_DIR

Called by tools/install_k2.sh --route source. torch >= 2.10 headers need C++20, under which two
constructs of k2 stop compiling; every patch is idempotent.
"""

import pathlib
import re
import sys

src = pathlib.Path(sys.argv[1])
setup = src / "setup.py"
text = setup.read_text()
setup.write_text(text.replace("-DCMAKE_CXX_STANDARD=17", "-DCMAKE_CXX_STANDARD=20"))
for cm in [src / "CMakeLists.txt"]:
    t = cm.read_text()
    t = re.sub(r"set\(CMAKE_CXX_STANDARD\s+\d+", "set(CMAKE_CXX_STANDARD 20", t)
    cm.write_text(t)
ragged = src / "k2/csrc/ragged.h"
t = ragged.read_text()
# C++20: a struct with user-declared constructors is no aggregate, so the brace-initialisation
# RaggedShapeLayer{splits, ids, n} in ragged_ops.cu needs a real constructor.
if "RaggedShapeLayer(const Array1<int32_t> &row_splits" not in t:
    ctor = ("  RaggedShapeLayer(const Array1<int32_t> &row_splits, const Array1<int32_t> &row_ids,\n"
            "                   int32_t cached_tot_size)\n"
            "      : row_splits(row_splits), row_ids(row_ids), cached_tot_size(cached_tot_size) {}\n")
    if "RaggedShapeLayer() = default;" not in t:
        ctor = "  RaggedShapeLayer() = default;\n" + ctor
    t, n = re.subn(r"(struct RaggedShapeLayer\s*\{\n)", lambda m: m.group(1) + ctor, t, count=1)
    if n != 1:
        sys.exit("install_k2.sh: struct RaggedShapeLayer not found in k2/csrc/ragged.h")
    ragged.write_text(t)
# torch's bundled pybind11 gives py::make_tuple results distinct types, so a __getstate__
# lambda returning tuples of different arities needs an explicit return type.
for f in (src / "k2/python/csrc").rglob("*.cu"):
    t = f.read_text()
    new = re.sub(r"(py::pickle\(\s*\[\]\([^)]*\))\s*\{", r"\1 -> py::tuple {", t)
    if new != t:
        f.write_text(new)
