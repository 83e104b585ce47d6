"""ComfyUI's two workflow formats and the node schemas (``/object_info`` entries) behind them (standard library only).

- **UI format** (what the frontend saves and opens; schema version 0.4): ``nodes`` with ids,
  positions, input/output slots and ``widgets_values``; ``links`` as
  ``[link_id, origin_id, origin_slot, target_id, target_slot, type]``; ``groups``; Note nodes.
- **API format** (what ``POST /prompt`` runs): ``{node_id: {"class_type", "inputs", "_meta"}}``;
  an input is a literal or a link ``[origin_id, origin_slot]``.

A node's ``widgets_values`` hold its widget inputs in ``INPUT_TYPES`` order (``input_order`` of
``/object_info``, required then optional). The frontend adds a value after some widgets: the
"control after generate" mode after an INT named ``seed``/``noise_seed`` or any widget declared
with ``control_after_generate``, and the upload button's value after a combo with
``image_upload``/``video_upload``/``animated_image_upload`` (frontend 1.27). The builder writes
both forms from one spec; the frontend's own graphToPrompt is the judge that they agree
(tests/integration/test_frontend_workflows.py), so nothing here re-implements it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
SEED_NAMES = ("seed", "noise_seed")
UPLOAD_FLAGS = ("image_upload", "video_upload", "animated_image_upload", "audio_upload")
# Nodes that live only in the frontend: never sent to the server.
FRONTEND_ONLY = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})


# --- detecting the format -----------------------------------------------------------------

def is_ui_workflow(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def is_api_prompt(data: Any) -> bool:
    return (isinstance(data, dict) and bool(data)
            and all(isinstance(v, dict) and "class_type" in v and isinstance(v.get("inputs", {}), dict)
                    for v in data.values()))


# --- node schemas (/object_info entries) ---------------------------------------------------

@dataclass(frozen=True)
class InputDef:
    name: str
    type: Any  # a type name ("MODEL", "INT", ...) or a list of combo options
    options: dict = field(default_factory=dict)
    optional: bool = False

    @property
    def combo_options(self) -> list | None:
        if isinstance(self.type, list):
            return self.type
        if self.type == "COMBO":
            return list(self.options.get("options", []))
        return None

    @property
    def is_widget(self) -> bool:
        """True where the frontend draws a widget (its value is in widgets_values), not a socket."""
        if self.options.get("forceInput"):
            return False
        return self.combo_options is not None or self.type in WIDGET_TYPES

    @property
    def extra_widget_values(self) -> int:
        """Values the frontend stores after this widget's own (control mode, upload button)."""
        extra = 0
        control = self.options.get("control_after_generate")
        if control is None:
            control = self.type == "INT" and self.name in SEED_NAMES
        if control:
            extra += 1
        if self.combo_options is not None and any(self.options.get(f) for f in UPLOAD_FLAGS):
            extra += 1
        return extra

    @property
    def type_name(self) -> str:
        return "COMBO" if self.combo_options is not None else str(self.type)


def ordered_inputs(schema: Mapping) -> list[InputDef]:
    """A node's inputs in INPUT_TYPES order: required, then optional (hidden inputs left out)."""
    out = []
    spec = schema.get("input", {})
    order = schema.get("input_order") or {}
    for section in ("required", "optional"):
        entries = spec.get(section) or {}
        names = list(order.get(section) or entries.keys())
        names += [n for n in entries if n not in names]
        for name in names:
            if name not in entries:
                continue
            entry = entries[name]
            typ = entry[0]
            opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            out.append(InputDef(name, typ, opts, section == "optional"))
    return out


def widget_layout(schema: Mapping) -> list[str | None]:
    """Names of a node's widgets_values slots, in order; None for the frontend's extra values."""
    names: list[str | None] = []
    for inp in ordered_inputs(schema):
        if inp.is_widget:
            names.append(inp.name)
            names.extend([None] * inp.extra_widget_values)
    return names


def socket_inputs(schema: Mapping) -> list[InputDef]:
    return [i for i in ordered_inputs(schema) if not i.is_widget]


def output_types(schema: Mapping) -> list[str]:
    return list(schema.get("output") or [])


def output_names(schema: Mapping) -> list[str]:
    return list(schema.get("output_name") or schema.get("output") or [])


class _Missing:
    def __repr__(self):
        return "<missing>"


_MISSING = _Missing()


def _is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def is_link(value: Any) -> bool:
    """True for an API input that links to another node's output: ``[node_id, slot]``."""
    return _is_link(value)


# --- validating an API prompt against /object_info ----------------------------------------

@dataclass(frozen=True)
class Problem:
    node_id: str
    class_type: str
    input: str | None
    message: str

    def __str__(self):
        where = f"node {self.node_id} ({self.class_type})"
        if self.input:
            where += f" input {self.input!r}"
        return f"{where}: {self.message}"


def _types_match(received: str, expected: Any) -> bool:
    if isinstance(expected, list):  # a combo fed by a link (e.g. from a primitive)
        return received in ("COMBO", "*") or isinstance(received, list)
    if received == "*" or expected == "*":
        return True
    if received == expected:
        return True
    # ComfyUI's validate_node_input (non-strict): the comma-separated type sets overlap.
    return bool({t.strip() for t in str(received).split(",")} & {t.strip() for t in str(expected).split(",")})


def validate_api(api: Mapping, object_info: Mapping[str, Mapping],
                 skip_combo_check: Iterable[str] = ()) -> list[Problem]:
    """What ComfyUI's /prompt validation would refuse in ``api``, checked without a server.

    ``skip_combo_check``: input names whose combo lists are machine-specific (checkpoint and
    residual file names), so placeholders are allowed there.
    """
    skip = set(skip_combo_check)
    problems: list[Problem] = []
    for node_id, node in api.items():
        cls = node.get("class_type")
        schema = object_info.get(cls)
        if schema is None:
            problems.append(Problem(node_id, str(cls), None, "no such node class in this ComfyUI"))
            continue
        defs = {i.name: i for i in ordered_inputs(schema)}
        inputs = node.get("inputs", {})
        for name in inputs:
            if name not in defs:
                problems.append(Problem(node_id, cls, name, "the node has no such input"))
        for name, inp in defs.items():
            if name not in inputs:
                if not inp.optional:
                    problems.append(Problem(node_id, cls, name, "required input is missing"))
                continue
            value = inputs[name]
            if _is_link(value):
                origin = api.get(value[0])
                if origin is None:
                    problems.append(Problem(node_id, cls, name, f"links to node {value[0]}, which is not in the graph"))
                    continue
                origin_schema = object_info.get(origin.get("class_type"), {})
                outs = output_types(origin_schema)
                if not 0 <= value[1] < len(outs):
                    problems.append(Problem(node_id, cls, name, f"links to output {value[1]} of node {value[0]} "
                                            f"({origin.get('class_type')}), which has {len(outs)} outputs"))
                    continue
                if not _types_match(outs[value[1]], inp.type):
                    problems.append(Problem(node_id, cls, name, f"gets {outs[value[1]]} from node {value[0]}, "
                                            f"expects {inp.type_name}"))
                continue
            if not inp.is_widget:
                problems.append(Problem(node_id, cls, name, f"expects a link ({inp.type}), got the value {value!r}"))
                continue
            problems.extend(Problem(node_id, cls, name, m) for m in _literal_problems(inp, value, name in skip))
    return problems


def _literal_problems(inp: InputDef, value: Any, skip_combo: bool) -> list[str]:
    options = inp.combo_options
    if options is not None:
        if not skip_combo and value not in options:
            shown = options if len(options) <= 12 else options[:12] + ["..."]
            return [f"{value!r} is not one of {shown}"]
        return []
    if inp.type == "BOOLEAN":
        return [] if isinstance(value, bool) else [f"expects true/false, got {value!r}"]
    if inp.type == "STRING":
        return [] if isinstance(value, str) else [f"expects a string, got {value!r}"]
    if inp.type in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return [f"expects a number, got {value!r}"]
        if inp.type == "INT" and value != int(value):
            return [f"expects a whole number, got {value!r}"]
        if "min" in inp.options and value < inp.options["min"]:
            return [f"{value} is below the minimum {inp.options['min']}"]
        if "max" in inp.options and value > inp.options["max"]:
            return [f"{value} is above the maximum {inp.options['max']}"]
    return []


# --- comparing graphs ---------------------------------------------------------------------

def _canonical(value: Any) -> Any:
    if _is_link(value):
        return ("link", str(value[0]), int(value[1]))
    if isinstance(value, float) and value.is_integer():
        return value  # 1.0 == 1 compares equal anyway
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value


def diff_api(a: Mapping, b: Mapping, *, titles: bool = True) -> list[str]:
    """Differences between two API prompts (empty when they describe the same graph)."""
    out = []
    for node_id in sorted(set(a) | set(b), key=_id_key):
        if node_id not in a or node_id not in b:
            present = "first" if node_id in a else "second"
            out.append(f"node {node_id}: only in the {present} graph")
            continue
        na, nb = a[node_id], b[node_id]
        if na.get("class_type") != nb.get("class_type"):
            out.append(f"node {node_id}: class {na.get('class_type')} vs {nb.get('class_type')}")
            continue
        if titles and (na.get("_meta") or {}).get("title") != (nb.get("_meta") or {}).get("title"):
            out.append(f"node {node_id}: title {(na.get('_meta') or {}).get('title')!r} vs "
                       f"{(nb.get('_meta') or {}).get('title')!r}")
        ia, ib = na.get("inputs", {}), nb.get("inputs", {})
        for name in sorted(set(ia) | set(ib)):
            va, vb = ia.get(name, _MISSING), ib.get(name, _MISSING)
            if va is _MISSING or vb is _MISSING or _canonical(va) != _canonical(vb):
                out.append(f"node {node_id} ({na.get('class_type')}) input {name!r}: {va!r} vs {vb!r}")
    return out


def _id_key(node_id: str):
    return (0, int(node_id), "") if str(node_id).isdigit() else (1, 0, str(node_id))


def structural_diff(ui: Mapping, api: Mapping) -> list[str]:
    """Differences between a UI workflow and an API prompt that need no node schemas.

    Checks node ids and classes, titles, every link (by input name), and that the API's literal
    values appear, in order, among the UI node's widgets_values. The full check is the frontend's
    own export (tests/integration/test_frontend_workflows.py).
    """
    out = []
    nodes = {str(n["id"]): n for n in ui.get("nodes", []) if n["type"] not in FRONTEND_ONLY}
    links = {int(link[0]): link for link in ui.get("links", [])}
    if set(nodes) != set(api):
        out.append(f"node ids differ: UI {sorted(nodes, key=_id_key)} vs API {sorted(api, key=_id_key)}")
    for node_id in sorted(set(nodes) & set(api), key=_id_key):
        n, a = nodes[node_id], api[node_id]
        if n["type"] != a.get("class_type"):
            out.append(f"node {node_id}: UI {n['type']} vs API {a.get('class_type')}")
            continue
        title = (a.get("_meta") or {}).get("title")
        if n.get("title") and n["title"] != title:
            out.append(f"node {node_id}: UI title {n['title']!r} vs API {title!r}")
        ui_links = {}
        for slot in n.get("inputs") or []:
            if slot.get("link") is not None:
                link = links.get(int(slot["link"]))
                if link is None:
                    out.append(f"node {node_id} input {slot['name']!r}: link {slot['link']} is not in 'links'")
                    continue
                ui_links[slot["name"]] = [str(link[1]), int(link[2])]
                idx = (n.get("inputs") or []).index(slot)
                if str(link[3]) != node_id or int(link[4]) != idx:
                    out.append(f"node {node_id} input {slot['name']!r}: link {link[0]} targets "
                               f"{link[3]}:{link[4]}, the slot is {node_id}:{idx}")
        api_links = {k: v for k, v in a.get("inputs", {}).items() if _is_link(v)}
        if ui_links != api_links:
            out.append(f"node {node_id} ({n['type']}): links differ: UI {ui_links} vs API {api_links}")
        literals = [v for k, v in a.get("inputs", {}).items() if not _is_link(v) and k not in ui_links]
        values = list(n.get("widgets_values") or []) if not isinstance(n.get("widgets_values"), dict) \
            else list(n["widgets_values"].values())
        if not _is_subsequence([_canonical(v) for v in literals], [_canonical(v) for v in values]):
            out.append(f"node {node_id} ({n['type']}): API values {literals} are not, in order, in the UI "
                       f"widgets_values {values}")
    ids = {str(n["id"]) for n in ui.get("nodes", [])}
    for link in ui.get("links", []):
        for end in (link[1], link[3]):
            if str(end) not in ids:
                out.append(f"link {link[0]} names node {end}, which the workflow does not have")
    return out


def _is_subsequence(needle: list, haystack: list) -> bool:
    it = iter(haystack)
    return all(any(x == y for y in it) for x in needle)
