"""Models: the registry of built-in architectures plus timm, and weight loading."""

from imgcls.models.registry import builtin_names, create_model, list_models, register

__all__ = ["builtin_names", "create_model", "list_models", "register"]
