"""A model's layer table, parameter counts and multiply-adds, via torchinfo."""

from __future__ import annotations

from imgcls.errors import ImgclsError


def summarize(name: str, num_classes: int = 1000, in_chans: int = 3, img_size: int | None = None,
              depth: int = 3) -> str:
    """torchinfo's table for `name` at the given input; the input size defaults to the model's own."""
    import torchinfo

    from imgcls.models.registry import create_model

    model = create_model(name, num_classes=num_classes, in_chans=in_chans, img_size=img_size)
    if img_size is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        img_size = int(cfg.get("input_size", (3, 224, 224))[-1]) if cfg else _builtin_default_size(model)
    try:
        stats = torchinfo.summary(model, input_size=(1, in_chans, img_size, img_size), depth=depth, verbose=0,
                                  col_names=("output_size", "num_params", "mult_adds"), row_settings=("var_names",))
    except RuntimeError as error:
        first = str(error).strip().splitlines()[-1][:160]
        raise ImgclsError(f"{name} does not run on {in_chans}x{img_size}x{img_size} input ({first}); "
                          f"pass another --img-size or --in-chans") from None
    return str(stats)


def _builtin_default_size(model) -> int:
    return getattr(model, "default_img_size", 224)
