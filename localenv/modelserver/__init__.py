"""Real model servers on loopback speaking the Open Inference Protocol (KServe V2 REST) and
exporting the model-metrics convention of docs/model-metrics.md."""

from localenv.modelserver.process import ModelServerError, RunningServer, start_model_server
from localenv.modelserver.variants import Variant

__all__ = ["ModelServerError", "RunningServer", "Variant", "start_model_server"]
