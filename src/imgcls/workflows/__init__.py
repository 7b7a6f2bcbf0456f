"""What a user does, one module each: train, evaluate, predict (and load), explain, export, serve, inspect
(models, summary, recipes, data show) and report (report, compare). Each module's public function is what the
CLI verb of the same name calls, and what `imgcls.<name>` is.

The package imports none of its modules: `imgcls predict` on an ONNX export imports the predict workflow alone,
without torch.
"""
