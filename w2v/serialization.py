"""The one way this project reads a torch file: :func:`load`, which never runs code from it.

A ``.pt`` file is a pickle, and a pickle can call anything it names (``os.system`` through
``__reduce__``). Reading is done by torch's own ``weights_only`` unpickler, which calls nothing
but what it is told is safe: tensors, storages, torch's rebuild helpers, ``OrderedDict`` and plain
containers, numbers and strings. On top of those, what fairseq checkpoints pickle is accepted as
inert data:

- ``argparse.Namespace`` (argparse-era ``args``);
- every ``omegaconf.*`` / ``fairseq.*`` global (hydra-era ``cfg``: ``DictConfig``, value nodes,
  metadata, fairseq's dataclass configs and ``ChoiceEnum`` members, ``Dictionary``) and
  ``numpy.*`` (numpy scalars in fairseq's training state) becomes a :class:`StandIn`: a local
  class that only stores what the pickle gives it. The real modules are never imported;
- ``typing.*`` hints (omegaconf's ``ref_type``) become :class:`TypeHint` names;
  ``collections.defaultdict`` becomes a plain dict (its factory is dropped);
- ``_k2.ragged.RaggedTensor``: graphs written before their ragged attributes were stored as plain
  tensors (``w2v.lang.lexicon.load_fsa`` rebuilds them from the stand-in).

The file's pickle is scanned before anything is unpickled; any other global (``os.system``,
``builtins.eval``, ``subprocess.Popen``, ``builtins.getattr``, ...) refuses the whole file with
an error naming it. Stand-ins are the exact set of globals the file names, allowed only for the
duration of that one load.

The project's own files (CTC and pretraining checkpoints, k-means, graphs) are written so that
plain ``torch.load(path, weights_only=True)`` reads them too.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import collections.abc
import os
import pickle
import pickletools
import struct
import threading
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import torch


class CheckpointError(ValueError):
    """A torch file that cannot be read safely; the message starts with the file's path."""


class RefusedCheckpointError(CheckpointError):
    """A torch file whose pickle names a global outside the accepted set: it would run code.

    Resuming skips a truncated checkpoint for an older one, but stops at this: someone put it there.
    """


class StandIn:
    """Inert record of a pickled object whose class is never imported (fairseq, omegaconf, numpy).

    Creating one (``NEWOBJ``), calling its class (``REDUCE``) and restoring its state (``BUILD``)
    only store what the pickle gave: ``args`` (constructor arguments) and ``state`` (what
    ``__setstate__`` received, ``None`` if nothing). ``global_name`` is the pickle's
    ``module.name`` of the class it stands in for.
    """

    global_name = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> "StandIn":
        self = super().__new__(cls)
        self.args = args
        self.state = None
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # __new__ stored the arguments; nothing else to do

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<stand-in for {self.global_name}>"


class TypeHint:
    """A ``typing`` hint as a name (``typing.List[builtins.int]``); omegaconf pickles them as metadata."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


class _Refused(Exception):
    """Raised from inside unpickling by the helpers below; becomes a :class:`CheckpointError`."""


def _subscript(origin: Any, args: Any) -> TypeHint:
    """``operator.getitem`` as pickles of ``typing.List[int]`` use it; for type hints only."""
    if not isinstance(origin, TypeHint):
        raise _Refused(f"operator.getitem on a {type(origin).__name__}; only type hints are subscripted")
    items = args if isinstance(args, tuple) else (args,)
    return TypeHint(f"{origin.name}[{', '.join(_hint_name(a) for a in items)}]")


def _hint_name(obj: Any) -> str:
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    return repr(obj)


def _none_type(obj: Any) -> type:
    """``builtins.type`` as pickles use it: ``type(None)`` (``Optional`` hints); nothing else."""
    if obj is not None:
        raise _Refused("builtins.type called on something other than None")
    return type(None)


def _defaultdict_as_dict(default_factory: Any = None) -> dict:
    """``collections.defaultdict(factory)`` → a plain dict; the factory is never kept nor called."""
    return {}


# Besides torch's own list: everything here only builds plain data.
_ALLOWED: dict[str, Any] = {
    "argparse.Namespace": argparse.Namespace,
    "builtins.int": int,
    "builtins.float": float,
    "builtins.bool": bool,
    "builtins.str": str,
    "builtins.dict": dict,
    "builtins.list": list,
    "builtins.tuple": tuple,
    "builtins.frozenset": frozenset,
    "builtins.object": object,
    "builtins.type": _none_type,
    "collections.defaultdict": _defaultdict_as_dict,
    "operator.getitem": _subscript,
    "_operator.getitem": _subscript,
}
# What torch's weights_only unpickler allows by itself outside ``torch.*`` (it checks ``torch.*``).
_TORCH_ALLOWED = {
    "collections.OrderedDict", "collections.Counter", "_codecs.encode",
    "builtins.set", "builtins.bytearray", "builtins.complex",
}
_STAND_IN_PACKAGES = ("omegaconf", "fairseq", "numpy")
_STAND_IN_GLOBALS = {"_k2.ragged.RaggedTensor"}  # graphs written before ragged attributes were split
_ACCEPTED = "only tensors, plain containers, argparse.Namespace and fairseq/omegaconf configs are accepted"

_stand_in_classes: dict[str, type[StandIn]] = {}
_type_hints: dict[str, TypeHint] = {}
# ``safe_globals`` edits one process-wide list: loads in two threads must not interleave.
_lock = threading.Lock()


def _stand_in(name: str) -> type[StandIn]:
    if name not in _stand_in_classes:
        short = name.rsplit(".", 1)[-1] or "StandIn"
        _stand_in_classes[name] = type(short, (StandIn,), {"global_name": name, "__module__": __name__})
    return _stand_in_classes[name]


def _replacement(name: str) -> Any:
    """What a global the pickle names is read as; None if it is refused (or torch's own)."""
    if name in _ALLOWED:
        return _ALLOWED[name]
    module = name.rsplit(".", 1)[0]
    if name in _STAND_IN_GLOBALS or module.split(".")[0] in _STAND_IN_PACKAGES:
        return _stand_in(name)
    if module == "typing":
        return _type_hints.setdefault(name, TypeHint(name))
    return None


def _is_torch_own(name: str) -> bool:
    return name in _TORCH_ALLOWED or name.startswith("torch.")


def _readable(name: str) -> str:
    module, _, attr = name.rpartition(".")
    if module in ("posix", "nt"):  # os.system pickles under the platform module's name
        return f"{name} (os.{attr})"
    return name


# ----------------------------------------------------------------------------------------------
# Scanning a pickle without running it


_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
               "SHORT_BINSTRING"}


def _pickle_globals(data: bytes | BinaryIO, found: set[str]) -> None:
    """Add the ``module.name`` of every global one pickle names to ``found`` (stops at STOP).

    Names are mapped as the unpickler maps Python 2 names (``__builtin__.eval`` → ``builtins.eval``).
    ``STACK_GLOBAL`` (protocol 4+, never written by ``torch.save``) is named from the strings
    pushed just before it; torch's unpickler refuses it whatever the name.
    """
    strings: list[str] = []
    memo: dict[int, Any] = {}
    last: Any = None
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            module, name = arg.split(" ", 1)
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
            found.add(f"{module}.{name}")
        elif op.name == "STACK_GLOBAL":
            found.add(".".join(strings[-2:]) if len(strings) >= 2 else "a global built on the stack")
        if op.name in _STRING_OPS:
            last = arg
            strings.append(arg)
        elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = last
        elif op.name == "MEMOIZE":
            memo[len(memo)] = last
        elif op.name in ("GET", "BINGET", "LONG_BINGET"):
            last = memo.get(arg)
            if isinstance(last, str):
                strings.append(last)
        else:
            last = None


def _scan(path: Path) -> tuple[set[str], str | None]:
    """(globals the file's pickles name, a reason the file is unreadable or None).

    A ``torch.save`` zip holds one pickle (``<archive>/data.pkl``); the legacy format is a run of
    pickles followed by raw tensor data. A plain pickle is scanned too, so that a payload in it is
    named rather than called "corrupt".
    """
    found: set[str] = set()
    with open(path, "rb") as f:
        is_zip = zipfile.is_zipfile(f)
        f.seek(0)
        try:
            if is_zip:
                with zipfile.ZipFile(f) as archive:
                    records = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
                    if len(records) != 1:
                        return found, f"{len(records)} data.pkl records in the zip archive, expected 1"
                    _pickle_globals(archive.read(records[0]), found)
            elif f.peek(2)[:2] == b"PK":
                return found, "not a complete zip archive"
            else:
                for _ in range(5):  # magic number, protocol, system info, the object, its storage keys
                    if not f.peek(1):
                        break
                    _pickle_globals(f, found)
        except (zipfile.BadZipFile, ValueError, EOFError, OSError, struct.error, UnicodeDecodeError) as e:
            return found, f"{type(e).__name__}: {e}"
    return found, None


# ----------------------------------------------------------------------------------------------
# Loading


def load(path: str | os.PathLike, *, what: str = "checkpoint") -> Any:
    """Read a ``torch.save`` file on the CPU without running code from it.

    Args:
        path: the file (zip format or torch's legacy format).
        what: what the file is, for messages ("checkpoint", "graph", "k-means file").
    Returns:
        The saved object; fairseq / omegaconf / numpy objects in it are :class:`StandIn` records
        (:func:`plain` turns configs into dicts).
    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file names a global outside the accepted set (the message names it),
            or is truncated or corrupt. The message starts with ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what} file")
    names, problem = _scan(path)
    refused = sorted(n for n in names if _replacement(n) is None and not _is_torch_own(n))
    if refused:
        raise RefusedCheckpointError(
            f"{path}: refuses to load: the file's pickle calls {' and '.join(_readable(n) for n in refused)}, "
            f"which a {what} never needs ({_ACCEPTED})"
        )
    if problem is not None:
        raise CheckpointError(f"{path}: truncated or corrupt {what} ({problem})")
    extra = [(_replacement(n), n) for n in sorted(names) if _replacement(n) is not None]
    with _lock, torch.serialization.safe_globals(extra):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except _Refused as e:
            raise RefusedCheckpointError(f"{path}: refuses to load: {e} ({_ACCEPTED})") from None
        except pickle.UnpicklingError as e:
            # torch's unpickler met something it does not build (e.g. state set on a class)
            raise RefusedCheckpointError(f"{path}: refuses to load: {_torch_reason(e)} ({_ACCEPTED})") from None
        except (RuntimeError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
                struct.error, zipfile.BadZipFile, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: truncated or corrupt {what} ({type(e).__name__}: {e})") from None


def _torch_reason(e: pickle.UnpicklingError) -> str:
    """The unpickler's own sentence from torch's long "Weights only load failed" message."""
    text = str(e)
    marker = "WeightsUnpickler error: "
    if marker in text:
        text = text.split(marker, 1)[1]
    return text.strip().split("\n\n", 1)[0]


def plain(obj: Any) -> Any:
    """Configs as plain data: ``argparse.Namespace`` and stand-ins → dicts, tuples → lists.

    omegaconf containers give their ``_content``, value nodes their ``_val``, an enum member
    (``Choices("layer_norm")``) its value, any other stand-in the state it was restored with.
    A stand-in with nothing to give (a numpy scalar) is returned as it is.
    """
    if isinstance(obj, argparse.Namespace):
        return {k: plain(v) for k, v in vars(obj).items()}
    if isinstance(obj, StandIn):
        state = obj.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}  # (dict, slots) as pickle's BUILD takes it
        if isinstance(state, dict):
            if "_content" in state:  # omegaconf DictConfig / ListConfig
                return plain(state["_content"])
            if "_val" in state:  # omegaconf value node
                return plain(state["_val"])
            return {k: plain(v) for k, v in state.items()}
        if state is None and len(obj.args) == 1:  # an enum member pickled as Choices(value)
            return plain(obj.args[0])
        return obj
    if isinstance(obj, collections.abc.Mapping):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


__all__ = ["CheckpointError", "StandIn", "TypeHint", "load", "plain"]
