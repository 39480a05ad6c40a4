"""What every method shares: its config, its place in the registry, attach / detach / save / load.

In the spirit of peft's tuners, each module of :mod:`mimic.methods` holds one method: a config
dataclass (the ``type:`` of a ``methods:`` entry in params.yaml, and the JSON next to the
weights) and a :class:`Method` that says how it enters a model (the attention interface of
:mod:`mimic.shift.attention`, or forward hooks), what its tensors are, how many of them are trained
or fitted, and what its training needs. Everything else is shared and lives here:

- :func:`attach` freezes the base model, installs the method and records how to undo it;
  :func:`detach` undoes it, after which the model computes exactly what it computed before;
  :func:`disabled` switches every installed piece off for a while (the online ICL teacher);
- checkpoints (``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``) are in
  :mod:`mimic.methods.pretrained`.

Adding a method is one module with its config and a :class:`Method` subclass, registered with
:func:`register`, plus its ``type:`` in params.yaml (see README, "Methods").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field, fields
from importlib import import_module
from typing import ClassVar

import torch
from torch import nn

from mimic.methods.catalog import CATALOG, MethodInfo
from mimic.models.adapters import sequence_output

SLOT = "_mimic_method"  # where the attachment record lives in model.__dict__


@dataclass
class Installed:
    """What a method did to a model: ``undo`` (run in reverse order by :func:`detach`) and ``switches``
    (context managers that turn a piece off, entered together by :func:`disabled`)."""

    undo: list[Callable[[], None]] = field(default_factory=list)
    switches: list[Callable[[], AbstractContextManager]] = field(default_factory=list)


class Switch:
    """On/off state shared by the forward hooks of one attachment."""

    def __init__(self) -> None:
        self.on = True

    @contextmanager
    def off(self):
        previous, self.on = self.on, False
        try:
            yield
        finally:
            self.on = previous


def output_hook(module: nn.Module, edit: Callable[[torch.Tensor], torch.Tensor], installed: Installed,
                switch: Switch) -> None:
    """Forward hook that replaces ``module``'s (first) output tensor by ``edit(output)`` while ``switch`` is on."""

    def hook(mod, args, output):
        if not switch.on:
            return output
        out, put_back = sequence_output(output, args)
        return put_back(edit(out))

    handle = module.register_forward_hook(hook, prepend=True)  # before recorders, so they see the edit
    installed.undo.append(handle.remove)


class Method(ABC):
    """One way to make a model answer as if it had seen demonstrations.

    type: the ``type:`` of its params.yaml entries (and of its checkpoints); its facts (fitted,
    uses demonstrations, the params.yaml section of its config, ...) are its line of
    :data:`mimic.methods.catalog.CATALOG`.
    config_class: its config dataclass.
    """

    type: ClassVar[str]
    config_class: ClassVar[type]
    reads_layout: ClassVar[bool] = False  # its training forwards need the batch's layout (:meth:`scope`)

    @property
    def info(self) -> MethodInfo:
        return CATALOG[self.type]

    @property
    def fitted(self) -> bool:
        """Computed by :meth:`fit` from forward passes (Task / Function Vector) rather than trained."""
        return self.info.fitted

    @property
    def section(self) -> str:
        """The key of a params.yaml ``methods:`` entry that holds its config."""
        return self.info.section

    def config_from_entry(self, entry: dict):
        """The config of a params.yaml ``methods:`` entry."""
        return self.config_class.from_dict(dict(entry.get(self.section) or {}))

    def complete(self, config, model: nn.Module):
        """``config`` with the model's shapes filled in (saved with the weights)."""
        return config

    @abstractmethod
    def install(self, model: nn.Module, config, module: nn.Module | None, verify: bool):
        """Build the method's tensors (unless ``module`` is given) and enter the model: ``(module, Installed)``."""

    @abstractmethod
    def counts(self, config) -> dict[str, int]:
        """``{"trainable": ..., "fitted": ...}`` numbers of a completed config, without a model."""

    def prepare(self, loaded, data, icd: dict, module: nn.Module) -> None:
        """Anything computed from forward passes before training starts (I2CL's context vectors)."""
        return None  # most methods compute nothing before training

    def scope(self, module: nn.Module, layout) -> AbstractContextManager:
        """Entered around each teacher-forced training forward: ``layout`` (:class:`mimic.data.batches.Layout`,
        only for methods that set :attr:`reads_layout`) says where its prompt parts lie (STAVE's groups)."""
        return nullcontext()

    def fit(self, loaded, data, icd: dict, config, hp: dict) -> tuple[nn.Module, dict]:
        """Fitted methods: the module (not attached) and a summary of the fit."""
        raise TypeError(f"{self.type} is trained, not fitted")


METHODS: dict[str, Method] = {}
_BY_CONFIG: dict[type, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to the registry; its type must be in the catalog, listed with the registering module."""
    info = CATALOG.get(method.type)
    if info is None or f"mimic.methods.{info.module}" != type(method).__module__:
        raise ValueError(f"method type {method.type!r} ({type(method).__module__}) is not in "
                         "mimic.methods.catalog.CATALOG with that module: add its line there")
    METHODS[method.type] = method
    _BY_CONFIG[method.config_class] = method
    return method


def method_for_type(kind: str) -> Method:
    if kind not in METHODS:
        raise ValueError(f"unknown method type {kind!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[kind]


def method_of(config) -> Method:
    try:
        return _BY_CONFIG[type(config)]
    except KeyError:
        raise TypeError(f"{type(config).__name__} is not the config of a registered method") from None


def config_from_entry(entry: dict, **fill):
    """The config of a params.yaml ``methods:`` entry, with ``fill`` (e.g. ``base_model``) set where it has it."""
    config = method_for_type(entry["type"]).config_from_entry(entry)
    for key, value in fill.items():
        _fill(config, key, value)
    return config


def _fill(config, key: str, value) -> None:
    names = {f.name for f in fields(config)}
    if key in names:
        if getattr(config, key) is None:
            setattr(config, key, value)
        return
    for name in names:  # composite configs: fill their parts
        part = getattr(config, name)
        if type(part) in _BY_CONFIG:
            _fill(part, key, value)


def count_parameters(config) -> dict[str, int]:
    """Trainable and fitted numbers of a completed config: ``{"trainable", "fitted", "total"}``."""
    counts = method_of(config).counts(config)
    return {**counts, "total": counts["trainable"] + counts["fitted"]}


# -- attaching ---------------------------------------------------------------------------------


@dataclass
class Attached:
    method: Method
    config: object
    module: nn.Module
    installed: Installed
    requires_grad: list[tuple[nn.Parameter, bool]]


def attached(model: nn.Module) -> Attached | None:
    return model.__dict__.get(SLOT)


def attach(model: nn.Module, config=None, shift: nn.Module | None = None, freeze_base: bool = True,
           verify: bool = True) -> nn.Module:
    """Install the method ``config`` describes (default: MimIC) into ``model``; return its module.

    The base model is frozen (``freeze_base``); the returned module's parameters are what is
    trained. ``shift`` hands in the method's module instead of building a fresh one.
    """
    from mimic.shift.config import MimicConfig

    config = MimicConfig() if config is None else config
    if attached(model) is not None:
        raise RuntimeError(f"a method ({attached(model).method.type}) is already attached to this model; "
                           "call mimic.detach(model) first")
    method = method_of(config)
    config = method.complete(config, model)
    grads = [(p, p.requires_grad) for p in model.parameters()]
    if freeze_base:
        for p, _ in grads:
            p.requires_grad_(False)
    try:
        module, installed = method.install(model, config, shift, verify)
    except BaseException:
        for p, flag in grads:
            p.requires_grad_(flag)
        raise
    module.eval()  # inference behaviour (no dropout, no training noise) until a training loop says otherwise
    model.__dict__[SLOT] = Attached(method, getattr(module, "config", config), module, installed, grads)
    return module


def detach(model: nn.Module) -> nn.Module | None:
    """Undo :func:`attach`: the model computes exactly what it computed before. Returns the module."""
    att = model.__dict__.pop(SLOT, None)
    if att is None:
        return None
    for undo in reversed(att.installed.undo):
        undo()
    for p, flag in att.requires_grad:
        p.requires_grad_(flag)
    return att.module


@contextmanager
def disabled(model: nn.Module):
    """Run the model without the attached method (e.g. the online ICL teacher), then switch it back on."""
    att = attached(model)
    with ExitStack() as stack:
        for switch in att.installed.switches if att is not None else ():
            stack.enter_context(switch())
        yield model



def config_parts(config) -> list:
    """``config`` and, for a composite method (MimIC + LoRA), the configs of its parts."""
    return [config] + [getattr(config, f.name) for f in fields(config) if type(getattr(config, f.name)) in _BY_CONFIG]


def _register_every_method() -> None:
    """Import every method module of the catalog (each registers itself): the registry is always whole."""
    for info in CATALOG.values():
        if info.module is not None:
            import_module(f"mimic.methods.{info.module}")


_register_every_method()
