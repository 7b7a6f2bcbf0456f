"""Load local weight files into a model: safetensors, or .pth/.pt/.bin read without unpickling code."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file
from timm.models import adapt_input_conv

from imgcls.console import info, warn
from imgcls.errors import ImgclsError, first_line

_NESTED_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "net", "module")


def read_state_dict(path: str | Path) -> dict:
    """Tensors of a weight file, keyed by name; never executes code from the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ImgclsError(f"weights file {path} does not exist; pass an existing .safetensors or .pth file")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises its own SafetensorError for bad headers
            raise ImgclsError(f"{path} is not a valid safetensors file ({error}); re-export it or pass "
                              f"the original checkpoint") from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError (not a zip/pickle), EOFError
        raise ImgclsError(
            f"{path} cannot be read as plain tensors ({first_line(error)}); only safetensors files and PyTorch state dicts "
            f"of tensors are loaded, never pickled code: save it with torch.save(model.state_dict(), ...)"
        ) from None
    for key in _NESTED_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ImgclsError(f"{path} holds no tensors keyed by name; pass a state dict or a safetensors file")
    return {key.removeprefix("module."): value for key, value in state.items() if isinstance(value, torch.Tensor)}


KeyMapper = Callable[[dict, dict], dict]
_KEY_MAPPERS: dict[str, KeyMapper] = {}
_KNOWN_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "net.", "_orig_mod.")


def register_key_mapper(name: str) -> Callable[[KeyMapper], KeyMapper]:
    """Decorator: `mapper(file_state, model_state) -> file_state renamed to the model's names`.

    Mappers translate checkpoints saved by other libraries; `--weights-map NAME` picks one, and the
    default `auto` tries the built-in ones in turn when the file's names do not fit the model.
    """

    def add(mapper: KeyMapper) -> KeyMapper:
        _KEY_MAPPERS[name] = mapper
        return mapper

    return add


@register_key_mapper("strip-prefix")
def strip_prefixes(state: dict, own: dict) -> dict:
    """Drop wrapper prefixes (DDP's module., torch.compile's _orig_mod., model., backbone., ...)."""
    renamed = {}
    for key, value in state.items():
        while not (key in own) and key.startswith(_KNOWN_PREFIXES):
            key = key.split(".", 1)[1]
        renamed[key] = value
    return renamed


@register_key_mapper("torchvision-vgg")
def torchvision_vgg(state: dict, own: dict) -> dict:
    """torchvision's VGG (classifier.0/3/6 Linear layers, e.g. vgg16-397923af.pth) as timm's VGG, whose first two
    fully connected layers are 7x7 and 1x1 convolutions (pre_logits) and whose last is head.fc: timm's own
    conversion of those checkpoints, reshaping the weights where the model's tensor has the same size."""
    names = {"classifier.0.": "pre_logits.fc1.", "classifier.3.": "pre_logits.fc2.", "classifier.6.": "head.fc."}
    renamed = {}
    for key, value in state.items():
        for old, new in names.items():
            if key.startswith(old):
                key = new + key[len(old):]
        target = own.get(key)
        if target is not None and target.shape != value.shape and target.numel() == value.numel():
            value = value.reshape(target.shape)
        renamed[key] = value
    return renamed


@register_key_mapper("positional")
def map_by_position(state: dict, own: dict) -> dict:
    """Pair tensors in order when both sides list the same layers under other names (e.g. the
    efficientnet_lite0 port on PyPI vs timm). Used only while the shapes agree position by position;
    a trailing classifier of another class count is left out and re-initialized."""
    file_items, own_items = list(state.items()), list(own.items())
    renamed = {}
    for (file_key, value), (own_key, own_value) in zip(file_items, own_items):
        if value.shape != own_value.shape and not _is_input_conv_pair(value, own_value):
            break
        renamed[own_key] = value
    return renamed


def _fit(state: dict, own: dict) -> int:
    return sum(1 for key, value in state.items() if key in own and own[key].shape == value.shape)


def map_keys(state: dict, own: dict, mapper: str = "auto") -> tuple[dict, str | None]:
    """Rename `state` to the model's names; returns the renamed state and the mapper used (None: as is)."""
    if mapper != "auto":
        if mapper not in _KEY_MAPPERS:
            raise ImgclsError(f"unknown --weights-map '{mapper}'; choose auto or one of {', '.join(_KEY_MAPPERS)}")
        return _KEY_MAPPERS[mapper](state, own), mapper
    best, best_name, best_fit = state, None, _fit(state, own)
    if best_fit == len(own):
        return best, None
    for name, candidate_mapper in _KEY_MAPPERS.items():
        candidate = candidate_mapper(state, own)
        fit = _fit(candidate, own)
        # Pairing by position is trusted only when nearly every layer lines up (all but a new head).
        if name == "positional" and fit < 0.9 * len(own):
            continue
        if fit > best_fit:
            best, best_name, best_fit = candidate, name, fit
    return best, best_name


def _is_input_conv_pair(value, target) -> bool:
    """RGB filters of a first convolution, and the same layer built for another channel count."""
    return (value.ndim == 4 and target.ndim == 4 and value.shape[0] == target.shape[0]
            and value.shape[2:] == target.shape[2:] and value.shape[1] == 3 and target.shape[1] != 3)


def _adapt_input_convs(state: dict, own: dict) -> dict:
    """RGB first-layer filters summed for 1-channel input (and repeated for more), as timm does for hub weights."""
    adapted = dict(state)
    for key, value in state.items():
        target = own.get(key)
        if target is not None and _is_input_conv_pair(value, target):
            adapted[key] = adapt_input_conv(target.shape[1], value)
    return adapted


def load_weights(model, path: str | Path, mapper: str = "auto") -> list[str]:
    """Load matching tensors from `path`; layers whose shape differs (a new head) keep their initialization.
    Returns the names of the model's tensors the file did not provide."""
    state = read_state_dict(path)
    own = model.state_dict()
    state, used_mapper = map_keys(state, own, mapper)
    if used_mapper is not None:
        info(f"weights: {Path(path).name} uses other tensor names; mapped them with the '{used_mapper}' mapper")
    state = _adapt_input_convs(state, own)
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
    return missing
