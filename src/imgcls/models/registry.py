"""The model registry: built-in architectures by decorated builder, then every timm model.

Like timm's: the model modules import the registry and register their builders; the package `imgcls.models`
imports the model modules, so every built-in is registered whoever imports the registry.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import inspect
import socket
from typing import Callable

import timm
from torch import nn
from huggingface_hub import constants as hub_constants

from imgcls.console import warn
from imgcls.errors import ImgclsError, first_line
from imgcls.models.defaults import ModelDefaults, timm_defaults
from imgcls.models.transfer import classifier_of
from imgcls.models.weights import load_weights

_BUILTINS: dict[str, Callable] = {}
_DEFAULTS: dict[str, ModelDefaults] = {}


def register(name: str, **defaults) -> Callable:
    """Decorator: make `builder(num_classes, in_chans, img_size, **kwargs) -> nn.Module` a model name.

    `defaults` are the ModelDefaults fields the architecture declares (input_size, min_input_size, mean, std,
    interpolation), e.g. `@register("lenet", input_size=32, min_input_size=32)`.
    """

    def add(builder: Callable) -> Callable:
        if name in _BUILTINS:
            raise ValueError(f"model name '{name}' is registered twice")
        _BUILTINS[name] = builder
        _DEFAULTS[name] = ModelDefaults(**defaults)
        return builder

    return add


def model_defaults(name: str) -> ModelDefaults:
    """Input size, normalisation and resampling the model `name` expects (checked name)."""
    check_model_name(name)
    if name in _BUILTINS:
        return _DEFAULTS[name]

    return timm_defaults(name)


def builtin_names() -> list[str]:
    """Names of the built-in architectures."""
    return sorted(_BUILTINS)


def buildable_by_name(name: str) -> bool:
    """A new Python process can build `name` by its name alone: imgcls's own architectures and timm's, not a
    builder registered at run time by the caller's code (a test, a notebook)."""
    return name not in _BUILTINS or _BUILTINS[name].__module__.startswith("imgcls.")


def name_pattern(pattern: str | None) -> str:
    """A shell-style pattern; a bare word (no * ? [) matches anywhere in the name: 'vit' -> '*vit*'."""
    if not pattern:
        return ""
    return pattern if any(char in pattern for char in "*?[") else f"*{pattern}*"


def list_models(pattern: str | None = None, pretrained: bool = False) -> list[str]:
    """Built-in and timm model names matching `pattern` (shell-style, or a word found anywhere in the name)."""
    pattern = name_pattern(pattern)
    names = builtin_names()
    if pattern:
        names = [name for name in names if fnmatch.fnmatch(name, pattern)]
    if pretrained:
        names = []
    return names + timm.list_models(pattern, pretrained=pretrained)


def _unknown_model(name: str) -> ImgclsError:
    candidates = builtin_names() + timm.list_models()
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    if not close:
        close = [candidate for candidate in candidates if name.lower() in candidate][:5]
    hint = f"; did you mean {', '.join(close)}?" if close else "; list the names with 'imgcls models'"
    return ImgclsError(f"unknown model '{name}'{hint}")


def check_model_name(name: str) -> None:
    """Raise the unknown-model error (with close matches) before any work is done."""
    if name in _BUILTINS:
        return  # no need to import timm (seconds) for a built-in

    if not timm.is_model(name):
        raise _unknown_model(name)


def create_model(
    name: str,
    num_classes: int,
    in_chans: int = 3,
    img_size: int | None = None,
    pretrained: bool = False,
    weights: str | None = None,
    weights_map: str = "auto",
    **kwargs,
):
    """Build a model by name: built-ins first, then timm; optionally load pretrained or local weights.

    A local `weights` file stands for the pretrained weights (a recipe that asks for them then downloads
    nothing); without one, an unreachable hub means the local download cache only, so that an offline machine
    learns in a second, not after a minute of retries, that --weights is needed.
    """
    pretrained = pretrained and weights is None
    try:
        with _hub_cache_only_when_offline(pretrained):
            model = _build(name, num_classes, in_chans, img_size, pretrained, kwargs)
    except TypeError as error:
        if "unexpected keyword argument" not in str(error):
            raise
        option = str(error).split("argument")[-1].strip(" '\"")
        raise ImgclsError(f"{name} has no option '{option}'; remove --model-option {option}=...") from None
    model.imgcls_name = name
    if weights is not None:
        missing = load_weights(model, weights, weights_map)
        tensors, head = model.state_dict(keep_vars=True), _head_tensor_ids(model)
        head_is_new = any(id(tensors[key]) in head for key in missing)
    else:
        head_is_new = pretrained and num_classes != _hub_classes(model)
    if head_is_new:
        _fresh_head(model)
    return model


def _head_tensor_ids(model) -> set[int]:
    try:
        return {id(tensor) for tensor in classifier_of(model).parameters()}
    except ImgclsError:  # no linear classifier: nothing to start afresh
        return set()


def _hub_classes(model) -> int:
    """How many classes the hub weights' head has (timm's pretrained_cfg; ImageNet's 1,000 when it says none)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return int(cfg.get("num_classes", 1000) if isinstance(cfg, dict) else 1000)


def _fresh_head(model) -> None:
    """A new classifier on pretrained features starts as nn.Linear does (weights of about 1/sqrt(features)).

    timm initialises some heads for training from scratch, e.g. EfficientNet's uniform +-1/sqrt(classes): on
    1,280 pretrained features with 2 classes its first logits are in the tens, a frozen backbone's head trained
    with Adam at 1e-4 then stayed at chance (shirt vs T-shirt, 3 epochs: 0.27-0.53 accuracy) where the linear
    probe's nn.Linear head reached 0.87.
    """
    try:
        head = classifier_of(model)
    except ImgclsError:
        return
    if isinstance(head, nn.Linear):
        head.reset_parameters()


def _build(name: str, num_classes: int, in_chans: int, img_size: int | None, pretrained: bool, kwargs: dict):
    if name in _BUILTINS:
        builder = _BUILTINS[name]
        if pretrained:
            if "pretrained" not in inspect.signature(builder).parameters:
                raise ImgclsError(f"'{name}' is a built-in architecture with no hub weights; drop --pretrained "
                                  f"or use --weights FILE")
            kwargs["pretrained"] = True
        try:
            model = builder(num_classes=num_classes, in_chans=in_chans, img_size=img_size,
                            **_supported_kwargs(builder, name, kwargs))
        except (OSError, RuntimeError) as error:
            if pretrained and _looks_like_network_error(error):
                raise ImgclsError(f"could not download pretrained weights for '{name}' ({first_line(error)}); "
                                  f"you seem to be offline: pass --weights FILE instead") from None
            raise
        return model
    return _create_timm_model(name, num_classes, in_chans, img_size, pretrained, **kwargs)


def _supported_kwargs(builder: Callable, name: str, kwargs: dict) -> dict:
    """Keep the options a built-in builder takes; warn about set options it does not."""
    accepted = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        # a configurable builder (e.g. vit) takes and checks its own options; None means "its default"
        return {key: value for key, value in kwargs.items() if value is not None}
    kept = {}
    for key, value in kwargs.items():
        if key in accepted:
            kept[key] = value
        elif value not in (None, 0, 0.0):
            warn(f"{name} has no '{key}' option; {key}={value} is ignored")
    return kept


def _create_timm_model(name: str, num_classes: int, in_chans: int, img_size: int | None, pretrained: bool,
                       **kwargs):
    if not timm.is_model(name):
        raise _unknown_model(name)
    kwargs = {key: value for key, value in kwargs.items() if value is not None}
    if img_size is not None:
        kwargs["img_size"] = img_size
    try:
        try:
            return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans,
                                     **kwargs)
        except TypeError as error:
            if "img_size" not in str(error):
                raise
            # Only some architectures (transformers, mostly) take the input size; CNNs are size-agnostic.
            kwargs.pop("img_size")
            return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans,
                                     **kwargs)
    except (OSError, RuntimeError, ValueError) as error:
        if pretrained and _looks_like_network_error(error):
            raise ImgclsError(
                f"could not download pretrained weights for '{name}' ({first_line(error)}); you seem to be "
                f"offline: pass the weights as a local file with --weights FILE (the recipe or --pretrained asked "
                f"for them)"
            ) from None
        raise


HUB = ("huggingface.co", 443)  # where timm's pretrained weights come from


@contextlib.contextmanager
def _hub_cache_only_when_offline(pretrained: bool):
    """While weights may be downloaded and the hub does not answer within 3 s: huggingface_hub's offline mode
    (weights already in its cache still load; anything else fails at once instead of after its retries)."""
    if not pretrained:
        yield
        return
    try:
        socket.create_connection(HUB, timeout=3).close()
        reachable = True
    except OSError:
        reachable = False
    previous = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = previous or not reachable
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = previous


def _looks_like_network_error(error: BaseException) -> bool:
    text = f"{type(error).__name__} {error}".lower()
    markers = ("connect", "resolve", "network", "offline", "timed out", "max retries", "hub", "huggingface",
               "http", "url", "localentrynotfound", "cannot find the requested files")
    return any(marker in text for marker in markers)
