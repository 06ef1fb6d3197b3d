"""Metric analysis: compare the candidate with the baseline and judge it.

* `spec` parses spec.analysis (and AnalysisTemplates) into typed values, presets included;
* `evaluate` is the pure judgement of one measurement and of a metric's measurement history;
* `providers` fetch values (Prometheus, web), one module each, found through `PROVIDERS`;
* `modelchecks` are the model-aware checks (drift, slices, ...), one module each, found through
  `MODEL_CHECKS`;
* `checker` is the `controller.checks.Checker` tying them together and keeping status.analysis.
"""
