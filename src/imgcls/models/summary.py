"""A model's layer table, parameter counts and multiply-adds, via torchinfo."""

from __future__ import annotations

import torchinfo

from imgcls.errors import ImgclsError, first_line
from imgcls.models.registry import create_model, model_defaults


def summarize(name: str, num_classes: int = 1000, in_chans: int = 3, img_size: int | None = None,
              depth: int = 3) -> str:
    """torchinfo's table for `name` at the given input; the input size defaults to the model's own."""
    img_size = img_size or model_defaults(name).input_size
    model = create_model(name, num_classes=num_classes, in_chans=in_chans, img_size=img_size)
    try:
        stats = torchinfo.summary(model, input_size=(1, in_chans, img_size, img_size), depth=depth, verbose=0,
                                  col_names=("output_size", "num_params", "mult_adds"), row_settings=("var_names",))
    except RuntimeError as error:
        raise ImgclsError(f"{name} does not run on {in_chans}x{img_size}x{img_size} input "
                          f"({first_line(error, last=True)}); "
                          f"pass another --img-size or --in-chans") from None
    return str(stats)
