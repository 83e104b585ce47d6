"""One check for every FLOAT input of the pack's nodes: a finite number inside the input's range.

A workflow is data, and its floats can be NaN or infinite (JSON from scripts, ``"nan"``
strings). ComfyUI compares a widget value with its min and max, which refuses an infinity
but lets NaN through (every comparison with NaN is false), and a NaN strength or weight
then gives a black image. ``check_float_inputs(cls)`` gives a node class its guards, read
from its INPUT_TYPES, so a new FLOAT input is covered without writing anything.

Where each refusal is shown decides how: ComfyUI shows a ``VALIDATE_INPUTS`` answer under
EVERY input that function reads (a bad resume_from under learning_rate), so the pack's
``VALIDATE_INPUTS`` reads one input or none:

- a class whose only checked input is one FLOAT gets a ``VALIDATE_INPUTS`` of that input:
  /prompt refuses NaN, an infinity or an out-of-range value at that input, in the pack's
  words (naming the input there turns ComfyUI's own min/max check off for it). A class with
  its own ``VALIDATE_INPUTS`` (which must read one input) leaves its FLOATs to the next two.
- every other FLOAT is range-checked by ComfyUI itself, at its input (an infinity too);
- a guard on the FUNCTION refuses NaN and infinities when the node runs, before it does any
  work, as the node's own message: linked values (validation sees those as None, and
  ComfyUI never range-checks them) and the widget NaN that ComfyUI's check lets through.
"""

from __future__ import annotations

import functools
import inspect
import math

from .node_errors import node_message


def float_specs(input_types: dict) -> dict[str, dict]:
    """The FLOAT inputs of an INPUT_TYPES dict (required, then optional): name -> widget options."""
    specs = {}
    for section in ("required", "optional"):
        for name, spec in (input_types.get(section) or {}).items():
            if isinstance(spec, (tuple, list)) and spec and spec[0] == "FLOAT":
                specs[name] = dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return specs


def _number(x: float) -> str:
    return f"{x:g}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")


def _allowed(spec: dict) -> str:
    low, high = spec.get("min"), spec.get("max")
    if low is not None and high is not None:
        text = f"a number from {_number(low)} to {_number(high)}"
    elif low is not None:
        text = f"a number of at least {_number(low)}"
    elif high is not None:
        text = f"a number of at most {_number(high)}"
    else:
        text = "a finite number"
    if "default" in spec:
        text += f" (default {_number(spec['default'])})"
    return text


def _non_finite(value: float) -> str:
    return "NaN (not a number)" if math.isnan(value) else f"{'-' if value < 0 else ''}infinite"


def float_problem(name: str, value, spec: dict, linked: bool | None = False) -> str | None:
    """Why ``value`` cannot be the FLOAT input ``name`` (``spec``: its widget options), or None.

    A widget value must also lie in [min, max]; a ``linked`` value (from another node's
    output) only needs to be finite, as ComfyUI never range-checks links. ``linked=None``:
    a value met when the node runs, where a widget value and a linked one look alike.
    """
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None  # a linked input at validation time, or an optional input left out
    value = float(value)
    if not math.isfinite(value):
        if linked is None:
            return (f"{name} is {_non_finite(value)}; it must be {_allowed(spec)}. Set the widget to a number, "
                    "or fix the node linked to it (a script writing the workflow must write numbers).")
        if linked:
            return f"{name} comes in as {_non_finite(value)} from its link; make the node linked to it give {_allowed(spec)}."
        return (f"{name} is {_non_finite(value)}; set it to {_allowed(spec)}. "
                "A script writing the workflow must write numbers.")
    if linked:
        return None
    if "min" in spec and value < spec["min"]:
        return f"{name} {_number(value)} is below its minimum; set it to {_allowed(spec)}."
    if "max" in spec and value > spec["max"]:
        return f"{name} {_number(value)} is above its maximum; set it to {_allowed(spec)}."
    return None


class _ValidateFloatInputs:
    """The VALIDATE_INPUTS of a class whose one checked input is a FLOAT; ComfyUI reads its signature."""

    def __init__(self, cls, name: str, spec: dict):
        self.cls, self.name, self.spec = cls, name, spec
        self.__signature__ = inspect.Signature([inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                                  default=None)])

    def __call__(self, *args, **values):
        value = args[0] if args else values.get(self.name)
        problem = float_problem(self.name, value, self.spec)
        return node_message(self.cls.NAME, problem) if problem else True


def check_float_inputs(cls):
    """Give the node class ``cls`` (with a NAME) the float checks described above; returns ``cls``."""
    if getattr(cls, "_float_inputs_checked", False):
        return cls
    specs = float_specs(cls.INPUT_TYPES())
    own = getattr(cls, "VALIDATE_INPUTS", None)
    if own is not None:
        names = inspect.getfullargspec(own).args
        names = names[1:] if names[:1] == ["cls"] else names
        if len(names) != 1:  # a developer's mistake: caught when the pack loads, in every test run
            raise TypeError(f"{cls.NAME}: VALIDATE_INPUTS reads {names}; ComfyUI would show its refusals under "
                            "every input it reads. Read one input.")
    elif len(specs) == 1:
        ((name, spec),) = specs.items()
        cls.VALIDATE_INPUTS = _ValidateFloatInputs(cls, name, spec)
    function = getattr(cls, cls.FUNCTION)
    signature = inspect.signature(function)

    @functools.wraps(function)
    def guarded(self, *args, **kwargs):
        given = {**signature.bind_partial(self, *args).arguments, **kwargs}  # ComfyUI passes keywords
        problems = [p for name, spec in specs.items()
                    if (p := float_problem(name, given.get(name), spec, linked=None))]
        if problems:
            raise ValueError(node_message(cls.NAME, " ".join(problems)))
        return function(self, *args, **kwargs)

    setattr(cls, cls.FUNCTION, guarded)
    cls._float_inputs_checked = True
    return cls

