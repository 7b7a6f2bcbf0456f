"""The run folder: its layout, its files and their schemas (RunFolder is the only code that names them)."""

from imgcls.run_files.layout import RunFolder, create_run_folder, default_run_name, locate_weights
from imgcls.run_files.predictions import SplitPredictions, load_split_predictions, save_split_predictions

__all__ = ["RunFolder", "SplitPredictions", "create_run_folder", "default_run_name", "load_split_predictions",
           "locate_weights", "save_split_predictions"]
