"""A refiner: a small network, trained on public data only (the flow's prior samples and the
training images), that maps decoded images toward real chest X-rays. Applied to a release it is
post-processing: it sees only the released image, so the release's guarantee is unchanged."""

from dpglow.refiner.checkpoint import REFINER_KEY, load_refiner
from dpglow.refiner.module import RefinerModule
from dpglow.refiner.net import PatchDiscriminator, Refiner

__all__ = ["REFINER_KEY", "PatchDiscriminator", "Refiner", "RefinerModule", "load_refiner"]
