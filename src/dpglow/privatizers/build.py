"""Build the privatizer a ``privacy=...`` config group describes (for privatize and evaluate).

Every file in ``conf/privacy/`` is a ``_partial_`` node whose ``_target_`` is a
:class:`~dpglow.privatizers.base.Privatizer`; the task fills in what only it knows (the flow,
its checkpoint info, the temperature, the resolution) and any other key is the privatizer's own.
"""

from __future__ import annotations

import inspect
from typing import Any

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from dpglow.privatizers.base import Privatizer

# Filled in by the task, never set in a privacy config.
INJECTED = ("flow", "flow_info", "temperature", "n_bits", "image_size")


class PrivacyConfigError(ValueError):
    """A ``privacy=`` config that names keys its privatizer does not take, or lacks a flow."""


def privatizer_class(privacy: DictConfig) -> type[Privatizer]:
    target = privacy.get("_target_")
    if not target:
        raise PrivacyConfigError(
            "privacy config without _target_: pick one of conf/privacy/*.yaml (privacy=laplace_l1)"
        )
    cls = get_class(target)
    if not (isinstance(cls, type) and issubclass(cls, Privatizer)):
        raise PrivacyConfigError(f"privacy._target_={target} is not a dpglow Privatizer")
    return cls


def accepted_keys(cls: type[Privatizer]) -> list[str]:
    """The keyword arguments a privatizer takes from its config (the injected ones excluded)."""
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in INJECTED]


def check_keys(privacy: DictConfig, cls: type[Privatizer]) -> None:
    """Refuse keys the privatizer does not take, naming those it does (never ignore a knob)."""
    given = [k for k in privacy if not str(k).startswith("_")]
    accepted = accepted_keys(cls)
    unknown = [k for k in given if k not in accepted]
    if unknown:
        injected = [k for k in unknown if k in INJECTED]
        where = (
            f"; {', '.join(injected)} come from the task (e.g. temperature=0.7, not "
            "privacy.temperature)"
            if injected
            else ""
        )
        raise PrivacyConfigError(
            f"{cls.__name__} does not take {', '.join(f'privacy.{k}' for k in unknown)}: its keys "
            f"are {', '.join(f'privacy.{k}' for k in accepted) or '(none)'}{where}"
        )


def build_privatizer(
    privacy: DictConfig,
    *,
    flow: Any = None,
    flow_info: dict[str, Any] | None = None,
    temperature: float | None = None,
    image_size: int | None = None,
) -> Privatizer:
    """The privatizer of ``privacy`` with the task's flow / temperature / resolution filled in
    (``temperature=None``: the privatizer's ``default_temperature``)."""
    cls = privatizer_class(privacy)
    check_keys(privacy, cls)
    if cls.needs_flow and flow is None:
        raise PrivacyConfigError(
            f"{cls.__name__} works in a flow's latent space: pass a trained flow checkpoint "
            "(flow.ckpt_path=<run>/checkpoints/last.ckpt)"
        )
    available = {
        "flow": flow,
        "flow_info": flow_info,
        "temperature": cls.default_temperature if temperature is None else temperature,
        "n_bits": (flow_info or {}).get("n_bits", 8),
        "image_size": image_size if image_size is not None else getattr(flow, "image_size", None),
    }
    takes = inspect.signature(cls.__init__).parameters
    injected = {k: v for k, v in available.items() if k in takes}
    if "image_size" in injected and injected["image_size"] is None:
        raise PrivacyConfigError(
            f"{cls.__name__} works on pixels: pass image_size=<side in pixels> (or a flow "
            "checkpoint to take its resolution)"
        )
    node = OmegaConf.create(OmegaConf.to_container(privacy, resolve=True))
    try:
        return instantiate(node, _partial_=True)(**injected)
    except TypeError as err:  # a wrong value type inside a nested node
        raise PrivacyConfigError(f"cannot build {cls.__name__} from privacy=...: {err}") from err
