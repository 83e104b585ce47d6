"""One check for every FLOAT input of the pack's nodes: a finite number inside the input's range.

A workflow is data, and its floats can be NaN or infinite (JSON from scripts, ``"nan"``
strings). ComfyUI compares a widget value with its min and max, which NaN passes (every
comparison with NaN is false), and a NaN strength or weight then gives a black image.
``check_float_inputs(cls)`` gives a node class two guards, both read from its INPUT_TYPES,
so a new FLOAT input is covered without writing anything:

- a ``VALIDATE_INPUTS`` that names the class's FLOAT inputs: /prompt refuses a NaN, an
  infinity or an out-of-range widget value before anything of the prompt runs. Naming an
  input there turns ComfyUI's own min/max check off for it (ComfyUI 0.3.x and 0.38 alike),
  so this check does the range as well. A class's own ``VALIDATE_INPUTS`` runs after it.
- a guard on its FUNCTION for values that come through a link (validation sees those as
  None, and ComfyUI never range-checks them): NaN and infinities are refused when the node
  runs, before it does any work.
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


def float_problem(name: str, value, spec: dict, linked: bool = False) -> str | None:
    """Why ``value`` cannot be the FLOAT input ``name`` (``spec``: its widget options), or None.

    A widget value must also lie in [min, max]; a ``linked`` value (from another node's
    output) only needs to be finite, as ComfyUI never range-checks links.
    """
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None  # a linked input at validation time, or an optional input left out
    value = float(value)
    if not math.isfinite(value):
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
    """A node class's VALIDATE_INPUTS; ComfyUI reads its signature to know which inputs it receives."""

    def __init__(self, cls, own):
        self.cls = cls
        self.own = own  # the class's own VALIDATE_INPUTS (bound), or None
        self.own_names = list(inspect.signature(own).parameters) if own is not None else []

    @functools.cached_property
    def specs(self) -> dict[str, dict]:
        # read at first use: INPUT_TYPES may list files, which needs ComfyUI's folders registered
        return float_specs(self.cls.INPUT_TYPES())

    @property
    def __signature__(self) -> inspect.Signature:
        names = list(self.specs) + [n for n in self.own_names if n not in self.specs]
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        return inspect.Signature([inspect.Parameter(n, kind, default=None) for n in names])

    def __call__(self, *args, **values):
        values.update(zip(list(self.__signature__.parameters)[: len(args)], args, strict=True))  # ComfyUI passes keywords
        problems = [p for name, spec in self.specs.items() if (p := float_problem(name, values.get(name), spec))]
        if problems:
            return node_message(self.cls.NAME, " ".join(problems))
        if self.own is not None:
            return self.own(**{n: values[n] for n in self.own_names if n in values})
        return True


def check_float_inputs(cls):
    """Give the node class ``cls`` (with a NAME) the float checks described above; returns ``cls``."""
    own = getattr(cls, "VALIDATE_INPUTS", None)
    if isinstance(own, _ValidateFloatInputs):
        return cls
    validator = _ValidateFloatInputs(cls, own)
    cls.VALIDATE_INPUTS = validator
    function = getattr(cls, cls.FUNCTION)
    signature = inspect.signature(function)

    @functools.wraps(function)
    def guarded(self, *args, **kwargs):
        given = {**signature.bind_partial(self, *args).arguments, **kwargs}  # ComfyUI passes keywords
        problems = [p for name, spec in validator.specs.items()
                    if (p := float_problem(name, given.get(name), spec, linked=True))]
        if problems:
            raise ValueError(node_message(cls.NAME, " ".join(problems)))
        return function(self, *args, **kwargs)

    setattr(cls, cls.FUNCTION, guarded)
    return cls
