"""Load local weight files into a model: safetensors, or .pth/.pt/.bin read without unpickling code."""

from __future__ import annotations

from pathlib import Path

from imgcls.console import warn
from imgcls.errors import ImgclsError

_NESTED_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "net", "module")


def read_state_dict(path: str | Path) -> dict:
    """Tensors of a weight file, keyed by name; never executes code from the file."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise ImgclsError(f"weights file {path} does not exist; pass an existing .safetensors or .pth file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises its own SafetensorError for bad headers
            raise ImgclsError(f"{path} is not a valid safetensors file ({error}); re-export it or pass "
                              f"the original checkpoint") from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError (not a zip/pickle), EOFError
        first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise ImgclsError(
            f"{path} cannot be read as plain tensors ({first}); only safetensors files and PyTorch state dicts "
            f"of tensors are loaded, never pickled code: save it with torch.save(model.state_dict(), ...)"
        ) from None
    for key in _NESTED_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ImgclsError(f"{path} holds no tensors keyed by name; pass a state dict or a safetensors file")
    return {key.removeprefix("module."): value for key, value in state.items() if isinstance(value, torch.Tensor)}


def load_weights(model, path: str | Path) -> None:
    """Load matching tensors from `path`; layers whose shape differs (a new head) keep their initialization."""
    state = read_state_dict(path)
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    reshaped = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    unexpected = sorted(k for k in state if k not in own)
    missing = sorted(k for k in own if k not in matching)
    if not matching:
        name = getattr(model, "imgcls_name", type(model).__name__)
        raise ImgclsError(
            f"no tensor in {path} fits {name} (expected names like {next(iter(own), '?')}, file has names like "
            f"{next(iter(state), '?')}); pass weights saved from the same architecture"
        )
    model.load_state_dict(matching, strict=False)
    if reshaped:
        warn(f"{len(reshaped)} tensor(s) of {Path(path).name} differ in shape and were re-initialized "
             f"(e.g. the classifier head for a new class count): {', '.join(reshaped[:4])}")
    if unexpected:
        warn(f"{len(unexpected)} tensor(s) of {Path(path).name} have no place in the model: "
             f"{', '.join(unexpected[:4])}{' ...' if len(unexpected) > 4 else ''}")
    if missing and len(missing) > len(reshaped):
        only_missing = [k for k in missing if k not in reshaped]
        warn(f"{len(only_missing)} model tensor(s) are not in {Path(path).name} and keep their initialization: "
             f"{', '.join(only_missing[:4])}{' ...' if len(only_missing) > 4 else ''}")
