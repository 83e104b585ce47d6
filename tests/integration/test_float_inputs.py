"""Every FLOAT input of every pack node refuses NaN and infinities (issue 15): the shared check, in
process and through a real server's /prompt. The inputs are read from the nodes' INPUT_TYPES, so a
new node or input is covered without touching this file."""

import math
import sys

import pytest
from cones2.devtools.comfy_host import load_host, skip_reason
from cones2_test_support.server import validation_refusals
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file

NON_FINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "nan-string": "NaN"}


def pack_float_inputs() -> list[tuple[str, str, dict]]:
    """(node id, input name, widget options) of every FLOAT input of every node the pack registers."""
    host = load_host()
    float_inputs = sys.modules[f"{host.pack.__name__}.nodes.float_inputs"]
    return [(node_id, name, spec) for node_id, cls in host.pack.NODE_CLASS_MAPPINGS.items()
            for name, spec in float_inputs.float_specs(cls.INPUT_TYPES()).items()]


def pytest_generate_tests(metafunc):
    if "float_input" in metafunc.fixturenames:
        found = [] if skip_reason() else pack_float_inputs()
        metafunc.parametrize("float_input", found or [None], ids=[f"{n}.{i}" for n, i, _ in found] or ["none"])


@pytest.fixture
def float_input(request):
    if request.param is None:
        pytest.skip(skip_reason() or "no float inputs")
    return request.param


@pytest.fixture(scope="module")
def check(host):
    return sys.modules[f"{host.pack.__name__}.nodes.float_inputs"]


def numbers(x):
    return f"{x:g}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")


def refusal(node_id, name, spec, what):
    """The start of the message for a non-finite widget value."""
    return (f"{node_id}: {name} is {what}; set it to a number from {numbers(spec['min'])} to "
            f"{numbers(spec['max'])} (default {numbers(spec['default'])}).")


# --- the shared check ------------------------------------------------------------------------

ranges = st.tuples(st.floats(-1e9, 1e9), st.floats(-1e9, 1e9)).map(sorted)


PLACES = {  # where a value sits against [low, high], and whether a widget value there passes
    "low": True, "high": True, "middle": True,
    "just below": False, "just above": False, "nan": False, "inf": False, "-inf": False,
}


def value_at(place, low, high):
    return {"low": low, "high": high, "middle": low / 2 + high / 2, "just below": math.nextafter(low, -math.inf),
            "just above": math.nextafter(high, math.inf), "nan": math.nan, "inf": math.inf,
            "-inf": -math.inf}[place]


@given(bounds=ranges, place=st.sampled_from(sorted(PLACES)), linked=st.booleans())
def test_a_value_passes_exactly_when_finite_and_in_range(check, bounds, place, linked):
    low, high = bounds
    spec = {"min": low, "max": high, "default": low}
    problem = check.float_problem("weight", value_at(place, low, high), spec, linked=linked)
    # a linked value is computed upstream: its range is not the widget's, but NaN and inf are still refused
    passes = PLACES[place] or (linked and place.startswith("just"))
    assert (problem is None) == passes
    if problem is not None:
        assert problem.startswith("weight ") and f"a number from {numbers(low)} to {numbers(high)}" in problem


@given(value=st.one_of(st.none(), st.booleans(), st.text(max_size=5)))
def test_values_that_are_not_numbers_are_left_to_comfyui(check, value):
    assert check.float_problem("weight", value, {"min": 0.0, "max": 1.0}) is None


def test_the_words_for_each_non_finite_value(check):
    spec = {"min": -1e9, "max": 0.0, "default": -1e8}
    assert check.float_problem("suppression", float("nan"), spec) == (
        "suppression is NaN (not a number); set it to a number from -1e9 to 0 (default -1e8). "
        "A script writing the workflow must write numbers.")
    assert check.float_problem("suppression", float("-inf"), spec).startswith("suppression is -infinite; set")
    assert check.float_problem("suppression", float("inf"), spec, linked=True) == (
        "suppression comes in as infinite from its link; make the node linked to it give a number from -1e9 to 0 "
        "(default -1e8).")
    assert check.float_problem("suppression", 1.5, spec) == (
        "suppression 1.5 is above its maximum; set it to a number from -1e9 to 0 (default -1e8).")
    assert check.float_problem("suppression", -2e9, spec).startswith("suppression -2e9 is below its minimum")


def test_float_specs_reads_required_then_optional_floats(check):
    types = {"required": {"a": ("FLOAT", {"min": 0.0}), "b": ("INT", {}), "c": (["x", "y"],)},
             "optional": {"d": ("FLOAT",), "e": ("MODEL",)}}
    assert check.float_specs(types) == {"a": {"min": 0.0}, "d": {}}


def test_a_pack_nodes_validate_inputs_reads_one_input_at_most(host, check):
    """ComfyUI shows a VALIDATE_INPUTS refusal under every input the function reads, so none reads two."""
    import inspect

    for node_id, cls in host.pack.NODE_CLASS_MAPPINGS.items():
        floats = list(check.float_specs(cls.INPUT_TYPES()))
        validate = getattr(cls, "VALIDATE_INPUTS", None)
        names = inspect.getfullargspec(validate).args if validate is not None else []  # what ComfyUI reads
        names = [n for n in names if n != "cls"]
        assert len(names) <= 1, node_id
        own = getattr(cls.VALIDATE_INPUTS, "__self__", None) is cls if validate is not None else False
        if len(floats) == 1 and not own:
            assert names == floats, node_id  # the one FLOAT is checked at validation, at its input
        else:
            assert not set(names) & set(floats), node_id  # ComfyUI range-checks them, each at its input
        assert cls.NAME == node_id


def test_a_validate_inputs_reading_two_inputs_is_refused_when_the_pack_loads(check):
    class TwoInputs:
        NAME, FUNCTION = "Cones2Test", "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"a": ("STRING",), "b": ("STRING",)}}

        @classmethod
        def VALIDATE_INPUTS(cls, a, b):
            return True

        def run(self, a, b):
            return (a,)

    with pytest.raises(TypeError, match="Cones2Test: VALIDATE_INPUTS reads \\['a', 'b'\\]; ComfyUI would show"):
        check.check_float_inputs(TwoInputs)


@pytest.mark.parametrize("what", ["nan", "inf", "-inf"])
def test_a_non_finite_value_stops_the_node_before_it_works(host, float_input, what):
    node_id, name, spec = float_input
    cls = host.node(node_id)
    with pytest.raises(ValueError) as e:
        getattr(cls(), cls.FUNCTION)(**{name: NON_FINITE[what]})  # nothing else given: it must stop first
    words = "NaN (not a number)" if what == "nan" else what.replace("inf", "infinite")
    assert str(e.value).startswith(f"{node_id}: {name} is {words}; it must be a number from "
                                   f"{numbers(spec['min'])} to {numbers(spec['max'])}")
    assert "or fix the node linked to it" in str(e.value)


# --- through the server ----------------------------------------------------------------------

CORE_PRODUCERS = {  # a socket type -> a core node giving it (64 px, cheap to validate)
    "MODEL": ("ckpt", 0), "CLIP": ("ckpt", 1), "VAE": ("ckpt", 2),
    "IMAGE": ("image", 0), "MASK": ("mask", 0), "LATENT": ("latent", 0), "CONDITIONING": ("text", 0),
}
CORE_NODES = {
    "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd2.safetensors"}},
    "image": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
    "mask": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64}},
    "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "text": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a dog"}},
}
PACK_PRODUCERS = {  # a pack socket type -> the pack node giving it, with inputs besides its defaults
    "CONES2_LAYOUT": ("Cones2LayoutBoxes", {"width": 64, "height": 64, "boxes": "dog: 0 0 32 32"}),
    "CONES2_BINDINGS": ("Cones2LoadResidual", {"residual_name": "dog.safetensors"}),
    "CONES2_RESIDUAL": ("Cones2TrainResidual", {"phrase": "dog"}),
    "CONES2_SUBJECT_PHOTOS": ("Cones2SubjectPhoto", {"image": ["image", 0], "mask": ["mask", 0]}),
    "CONES2_SUBJECT_REFERENCES": ("Cones2SubjectReference", {"images": ["image", 0]}),
}


def _inline_residual() -> str:
    import torch
    from cones2.training.inline_residual import residual_to_base64
    from cones2.training.residual_file import make_residual

    return residual_to_base64(make_residual(torch.zeros(1, 1024), subject="dog"))


VALID_VALUES = {"Cones2InlineResidual": {"residual_base64": _inline_residual()}}  # widgets whose default is no value


def widget_default(spec):
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    if isinstance(kind, list):
        return options.get("default", kind[0])
    return options.get("default", {"STRING": "dog", "BOOLEAN": False}.get(kind, 0))


def valid_graph(info, node_id, overrides=None):
    """A graph that passes validation, with ``node_id`` (defaults + overrides) feeding a PreviewAny."""
    graph = {k: {"class_type": v["class_type"], "inputs": dict(v["inputs"])} for k, v in CORE_NODES.items()}

    def add(class_type, values, key):
        values = {**VALID_VALUES.get(class_type, {}), **values}
        inputs = {}
        for name, spec in info[class_type]["input"]["required"].items():
            kind = spec[0]
            if name in values:
                inputs[name] = values[name]
            elif isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN"):
                inputs[name] = widget_default(spec)
            elif kind in CORE_PRODUCERS:
                inputs[name] = list(CORE_PRODUCERS[kind])
            else:
                assert kind in PACK_PRODUCERS, f"no producer of {kind} for {class_type}.{name}: add one"
                producer, extra = PACK_PRODUCERS[kind]
                inputs[name] = [add(producer, extra, f"{kind}-producer"), 0]
        graph[key] = {"class_type": class_type, "inputs": inputs}
        return key

    add(node_id, overrides or {}, "under_test")
    graph["show"] = {"class_type": "PreviewAny", "inputs": {"source": ["under_test", 0]}}
    return graph


@pytest.fixture(scope="module")
def object_info(comfy_server):
    folder = comfy_server.base / "models" / "cones2_residuals"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "dog.safetensors").exists():
        import torch

        save_file({"residual": torch.zeros(1, 1024)}, str(folder / "dog.safetensors"),
                  metadata={"format": "cones2-residual", "format_version": "1", "subject": "dog"})
    return comfy_server.get("/object_info")


def refused(server, graph):
    status, body = server.post("/prompt", {"prompt": graph, "client_id": "cones2-tests"})
    assert status == 400, f"the graph was queued: {body}"
    return body["node_errors"]


def validated_alone(host_or_info, node_id, name) -> bool:
    """Whether ``name`` is the one input the node's VALIDATE_INPUTS reads (else ComfyUI checks it)."""
    import inspect

    validate = getattr(host_or_info.node(node_id), "VALIDATE_INPUTS", None)
    return validate is not None and [n for n in inspect.getfullargspec(validate).args if n != "cls"] == [name]


@pytest.mark.server
@pytest.mark.parametrize("what", sorted(NON_FINITE))
def test_a_non_finite_widget_value_is_refused_at_its_input_or_by_the_node(
        host, comfy_server, object_info, float_input, what):
    node_id, name, spec = float_input
    graph = valid_graph(object_info, node_id, {name: NON_FINITE[what]})
    words = {"nan": "NaN (not a number)", "nan-string": "NaN (not a number)", "inf": "infinite",
             "-inf": "-infinite"}[what]
    status, body = comfy_server.post("/prompt", {"prompt": graph, "client_id": "cones2-tests"})
    if validated_alone(host, node_id, name):  # the pack's check, at this input, before anything runs
        assert status == 400 and list(body["node_errors"]) == ["under_test"], body
        assert validation_refusals(body["node_errors"]["under_test"]) == [
            (name, refusal(node_id, name, spec, words) + " A script writing the workflow must write numbers.")]
    elif what in ("inf", "-inf"):  # ComfyUI's own min/max check, at this input
        assert status == 400 and list(body["node_errors"]) == ["under_test"], body
        ((where, _),) = validation_refusals(body["node_errors"]["under_test"])
        assert where == name
    else:  # NaN passes every comparison: the node refuses it when it runs, before any work, in its own words
        assert status == 200, body
        err = comfy_server.execution_error(comfy_server.wait(body["prompt_id"]))
        assert err is not None and err["node_type"] == node_id
        assert err["exception_message"].startswith(f"{node_id}: {name} is NaN (not a number); it must be")


@pytest.mark.server
def test_the_server_refuses_an_out_of_range_value_at_its_input(comfy_server, object_info, float_input):
    node_id, name, spec = float_input
    errors = refused(comfy_server, valid_graph(object_info, node_id, {name: spec["max"] + 1.0}))
    ((where, message),) = validation_refusals(errors["under_test"])
    assert where == name  # never under another input


@pytest.mark.server
@pytest.mark.parametrize(("node_id", "name"), [("Cones2LoadResidual", "strength"), ("Cones2LayoutGuidance", "weight")])
def test_a_nan_through_a_link_stops_the_run_at_the_node(comfy_server, object_info, node_id, name):
    graph = valid_graph(object_info, node_id, {name: ["nan", 0]})
    graph["nan"] = {"class_type": "PrimitiveFloat", "inputs": {"value": float("nan")}}
    entry = comfy_server.wait(comfy_server.queue(graph))
    err = comfy_server.execution_error(entry)
    assert err is not None and err["node_type"] == node_id
    assert err["exception_message"].startswith(f"{node_id}: {name} is NaN (not a number); it must be")
    executed = {graph[k]["class_type"] for k in entry.get("outputs", {})}
    assert "PreviewAny" not in executed
