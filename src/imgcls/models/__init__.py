"""Models: the registry of built-in architectures plus timm, and weight loading.

Importing the package registers the built-in architectures (their modules run `@register`).
"""

from imgcls.models import densenet_se, fastcnn, small, vit  # noqa: F401  (registers the built-ins)
from imgcls.models.registry import builtin_names, create_model, list_models, register

__all__ = ["builtin_names", "create_model", "list_models", "register"]
