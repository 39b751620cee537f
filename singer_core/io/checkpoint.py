"""Our checkpoint format: a folder with `config.json` + `model.safetensors`, written atomically, loaded strictly.

`PretrainedMixin` gives an `nn.Module` whose constructor takes one JsonConfig dataclass
`save_pretrained(folder)` and `from_pretrained(folder_or_file)`. Loading rebuilds the module from the
config and loads the tensors strictly, naming missing, unexpected and wrongly-shaped keys. Truncated or
foreign files fail with a message that names the file and how to fix it. Nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from .fs import DISK_FULL, READ_ONLY, fs_error, remove_quietly

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

M = TypeVar("M", bound="PretrainedMixin")


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, who: str = "save") -> Path:
    """Write `data` to `path` through a temporary sibling file and an atomic rename.

    A file-system error (read-only folder, full disk, a file where a folder should be, a folder at `path`) is
    a FileSystemError naming the path; the temporary file is removed and the original file left as it was.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as error:
        raise fs_error(error, path, who=who) from error
    finally:
        if tmp is not None:
            remove_quietly(tmp)  # never masks the error being raised
    return path


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike, *, who: str = "save") -> Iterator[Path]:
    """Fill a folder atomically: `with atomic_folder(path) as tmp: write files into tmp`.

    tmp is a hidden temporary sibling; when the block succeeds it replaces `folder` (an existing folder is
    moved aside first and removed after, so a reader never sees a half-written one); when it raises
    (including an interrupt), tmp is removed and `folder` is left as it was. A read-only folder or a full disk,
    inside the block or in the renames, is a FileSystemError naming the path; cleanup never masks it.
    """
    folder = Path(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    except OSError as error:
        raise fs_error(error, folder, who=who) from error
    try:
        yield tmp
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
            os.replace(folder, old / folder.name)
            os.replace(tmp, folder)
            remove_quietly(old)
        else:
            os.replace(tmp, folder)
    except OSError as error:
        remove_quietly(tmp)
        if error.errno in READ_ONLY + DISK_FULL:
            raise fs_error(error, folder, who=who) from error
        raise
    except BaseException:
        remove_quietly(tmp)
        raise


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Save a flat name → tensor mapping as one .safetensors file, atomically.

    Tensors are made contiguous and moved to CPU; shared storage is cloned (safetensors refuses aliases).
    """
    from safetensors.torch import save

    flat = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in tensors.items()}
    return atomic_write_bytes(path, save(flat, metadata=metadata))


def load_tensors(path: str | os.PathLike, *, device: str | torch.device = "cpu",
                 finite: bool = True) -> dict[str, torch.Tensor]:
    """Load a .safetensors file; a missing, empty, truncated or foreign file is a ValueError that says so, and
    so is (with finite=True) a floating tensor holding NaN or infinite values, named with the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_tensors: no file at '{path}'; check the path or re-run the save")
    if path.stat().st_size < 8:
        raise ValueError(f"load_tensors: '{path}' is {path.stat().st_size} bytes, not a safetensors file; "
                         "it was cut short while writing or copying: save or download it again")
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, RuntimeError) as error:
        raise ValueError(f"load_tensors: '{path}' is not a readable safetensors file ({error}); it is truncated "
                         "or of another format: save or download it again") from error
    if finite:
        check_finite(tensors, source=f"load_tensors: '{path}'")
    return tensors


def check_finite(tensors: Mapping[str, torch.Tensor], *, source: str, infinite_ok: Iterable[str] = ()) -> None:
    """Raise a ValueError naming the first floating tensor holding NaN or infinite values (and how many).

    Weights like that come from a diverged training run or a broken conversion; loading them would only fail
    later, blaming the input (e.g. "the motion is NaN"). `infinite_ok` names buffers where +-inf is a value
    by design (an unbounded range, an ignored coefficient's infinite std); NaN is refused everywhere.
    """
    infinite_ok = set(infinite_ok)
    for name, tensor in tensors.items():
        if not tensor.is_floating_point() or bool(torch.isfinite(tensor).all()):
            continue
        if name in infinite_ok and not bool(torch.isnan(tensor).any()):
            continue
        nan = int(torch.isnan(tensor).sum())
        inf = int(torch.isinf(tensor).sum())
        raise ValueError(f"{source}: tensor '{name}' {tuple(tensor.shape)} holds {nan} NaN and {inf} infinite "
                         "values; these weights are damaged (a diverged training run or a broken conversion): use "
                         "an earlier checkpoint (python -m singer_core.train TASK --resume-from STEP) or save / "
                         "download them again")


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format; older files are a bare pickle stream
_PICKLE_FIX = ("Use the .safetensors version of these weights (most model pages offer one), or convert a file you "
               "trust once, on a machine where running its code is acceptable: read it with torch.load and "
               "weights_only=False, then write the state dict with safetensors.torch.save_file to a .safetensors file")


def load_torch_file(path: str | os.PathLike, *, who: str = "load_torch_file", mmap: bool = False) -> Any:
    """Read a `.pth` / `.ckpt` / `.bin` / `.pt` torch file with `torch.load(weights_only=True)` (never unpickling
    code), turning torch's errors into ValueErrors that say what is wrong and what to do.

    Args:
        path: the file.
        who: the caller's name, used in the messages.
        mmap: memory-map the tensors (only for torch's zip format; older files are read normally).

    Returns:
        whatever the file holds (usually a dict of tensors).

    Raises:
        FileNotFoundError: no file there. ValueError: an empty, truncated or foreign file, or a file holding
        pickled Python objects besides tensors (refused: unpickling them could run arbitrary code).
    """
    import pickle
    import re

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{who}: no file at '{path}'; check the path")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{who}: '{path}' is empty (0 bytes); the download or copy did not finish: get the file "
                         "again")
    with open(path, "rb") as handle:
        head = handle.read(4)
    is_zip = head == _ZIP_MAGIC
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and is_zip)
    except pickle.UnpicklingError as error:
        text = str(error)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        # a torch file (zip, or a pickle stream starting with PROTO) that holds more than tensors; other bytes
        # (an HTML error page saved as .bin) also fail as "Unsupported operand", but are no torch file at all
        if not (found or is_zip or head[:1] == b"\x80"):
            raise ValueError(f"{who}: '{path}' is not a PyTorch weights file (it starts with {head!r}: an HTML "
                             "error page, another format or a damaged download); give the model's .safetensors "
                             "(or .pth/.ckpt) file, downloaded again") from error
        what = f"e.g. {found.group(1)}" if found else "objects other than tensors, numbers and strings"
        raise ValueError(f"{who}: '{path}' is refused: it contains pickled Python objects ({what}), i.e. code "
                         f"that would run while loading; only plain tensors are loaded here. {_PICKLE_FIX}") from error
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, IndexError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0] or type(error).__name__
        if is_zip or isinstance(error, EOFError):
            raise ValueError(f"{who}: '{path}' is truncated or damaged ({size} bytes; torch says: {reason[:160]}); "
                             "download or save it again, or use the .safetensors version") from error
        raise ValueError(f"{who}: '{path}' is not a PyTorch weights file ({type(error).__name__}: {reason[:160]}); "
                         "give the model's .safetensors (or .pth/.ckpt) file") from error


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata stored in a .safetensors header (empty dict if none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def check_state_dict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], *, source: str,
                     allow_missing: tuple[str, ...] = ()) -> None:
    """Raise a ValueError listing missing, unexpected and wrongly-shaped keys of `state` for `module`.

    allow_missing: key prefixes that may be absent (e.g. frozen parts loaded from elsewhere).
    """
    expected = module.state_dict()
    missing = sorted(k for k in expected if k not in state and not k.startswith(allow_missing))
    unexpected = sorted(k for k in state if k not in expected)
    wrong = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                   for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        def show(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f" … (+{len(items) - 8} more)" if len(items) > 8 else "") if items else "none"
        raise ValueError(f"{source}: weights do not match {type(module).__name__}: missing [{show(missing)}]; "
                         f"unexpected [{show(unexpected)}]; wrong shape [{show(wrong)}]. The file belongs to "
                         "another model or configuration: load it with the matching config/checkpoint")


class PretrainedMixin:
    """save_pretrained / from_pretrained for an nn.Module built as `cls(config)` from a JsonConfig dataclass.

    Subclasses set `config_class` and keep the config as `self.config`. `model_type` (default: the class
    name) is written into config.json and checked when loading, so a file of another model is refused.
    """

    config_class: ClassVar[type]
    model_type: ClassVar[str | None] = None
    # keys a file written by an older version may lack (they keep their initial values); all others are strict
    optional_keys: ClassVar[tuple[str, ...]] = ()
    infinite_ok_keys: ClassVar[tuple[str, ...]] = ()  # buffers where +-inf is a value by design (never NaN)

    @classmethod
    def _type_name(cls) -> str:
        return cls.model_type or cls.__name__

    def save_pretrained(self, folder: str | os.PathLike, *, metadata: dict[str, str] | None = None) -> Path:
        """Write `config.json` and `model.safetensors` into `folder` (replaced as a whole, atomically)."""
        with atomic_folder(folder, who=f"{type(self).__name__}.save_pretrained") as tmp:
            config = json.loads(self.config.to_json())  # type: ignore[attr-defined]
            payload = {"model_type": self._type_name(), "config": config}
            (tmp / CONFIG_NAME).write_text(json.dumps(payload, indent=2, sort_keys=True))
            save_tensors(tmp / WEIGHTS_NAME, self.state_dict(), metadata={"model_type": self._type_name(),
                                                                             **(metadata or {})})
        return Path(folder)

    @classmethod
    def read_config(cls, folder: str | os.PathLike) -> Any:
        """Parse `folder/config.json` into `config_class`, checking the model type."""
        path = Path(folder) / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{cls.__name__}.from_pretrained: no {CONFIG_NAME} in '{folder}'; give a "
                                    "folder written by save_pretrained (config.json + model.safetensors)")
        try:
            payload = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{cls.__name__}.from_pretrained: '{path}' is not valid JSON ({error}); it was cut "
                             "short or edited by hand: copy the checkpoint folder again (or re-save it)") from error
        if not isinstance(payload, dict) or "config" not in payload:
            raise ValueError(f"{cls.__name__}.from_pretrained: '{path}' has no 'config' entry; it was not "
                             "written by save_pretrained")
        found = payload.get("model_type")
        if found != cls._type_name():
            raise ValueError(f"{cls.__name__}.from_pretrained: '{folder}' holds a '{found}' model, not "
                             f"'{cls._type_name()}'; pick the matching loader or checkpoint")
        return cls.config_class.from_json(json.dumps(payload["config"]))

    @classmethod
    def from_pretrained(cls: type[M], folder: str | os.PathLike, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None) -> M:
        """Rebuild from `folder/config.json` and load `folder/model.safetensors` strictly."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{cls.__name__}.from_pretrained: '{folder}' is not a folder; give the "
                                    "folder written by save_pretrained or by the trainer (…/final)")
        config = cls.read_config(folder)
        model = cls(config)  # type: ignore[call-arg]
        state = load_tensors(folder / WEIGHTS_NAME, finite=False)
        check_finite(state, source=f"{cls.__name__}.from_pretrained: '{folder / WEIGHTS_NAME}'",
                     infinite_ok=cls.infinite_ok_keys)
        check_state_dict(model, state, source=f"{cls.__name__}.from_pretrained('{folder}')",  # type: ignore[arg-type]
                         allow_missing=cls.optional_keys)
        absent = [key for key in cls.optional_keys if key not in state]
        if absent:
            logger.info("%s.from_pretrained('%s'): written before %s existed; keeping their defaults", cls.__name__,
                        folder, ", ".join(absent))
        model.load_state_dict(state, strict=not absent)  # type: ignore[attr-defined]
        model.to(device=device, dtype=dtype)  # type: ignore[attr-defined]
        return model.eval()  # type: ignore[attr-defined]
