"""The evaluation classifier: torchxrayvision's DenseNet behind one tested input contract."""

from dpglow.classifier.contract import XRV_RANGE, to_xrv_input
from dpglow.classifier.module import ClassifierModule, PretrainedWeightsError

__all__ = ["XRV_RANGE", "ClassifierModule", "PretrainedWeightsError", "to_xrv_input"]
