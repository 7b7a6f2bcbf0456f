"""What a user does, one module each: train, evaluate, predict (and load), inspect, report. Each public
function here is what the CLI verb of the same name calls, and what `imgcls.<name>` is."""

from imgcls.workflows.evaluate import evaluate
from imgcls.workflows.explain import explain
from imgcls.workflows.export import export
from imgcls.workflows.inspect import list_models, recipes, show_data, summary
from imgcls.workflows.predict import LoadedModel, load, load_pretrained, predict
from imgcls.workflows.report import compare, report
from imgcls.workflows.serve import serve
from imgcls.workflows.train import TrainOutcome, train

__all__ = ["LoadedModel", "TrainOutcome", "compare", "evaluate", "explain", "export", "list_models", "load", "load_pretrained", "predict",
           "recipes", "report", "serve", "show_data", "summary", "train"]
