"""Describe a ComfyUI graph once in Python; write it in both formats (standard library only).

    g = Graph("two_subjects_boxes")
    ckpt = g.node("CheckpointLoaderSimple", col=0, ckpt_name="v2-1_512-ema-pruned.safetensors")
    text = g.node("CLIPTextEncode", col=1, title="Negative prompt", clip=ckpt[1], text="")
    g.note("Put the checkpoint in models/checkpoints.", col=0)
    g.group("Model", [ckpt])
    api = g.to_api(schemas); ui = g.to_ui(schemas)

``schemas`` are ``/object_info`` entries (see ``node_schemas``). Node ids are 1, 2, ... in
declaration order and the same in both forms; the API node's ``_meta.title`` is the UI title.
Widgets a spec leaves out get the node's default (an input without one must be given). The UI
form is laid out in columns (``col``), nodes stacked by ``row`` then declaration order, each
group's nodes kept together under the group's title band.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from .node_schemas import InputDef, is_link, ordered_inputs, output_names, output_types, widget_layout

FRONTEND_VERSION = "1.27.10"  # the comfyui-frontend-package ComfyUI 0.3.64 pins
PACK_CNR_ID = "comfyui-cones2"
PACK_PREFIX = "Cones2"
COLUMN_GAP, ROW_GAP, GROUP_PAD, GROUP_TITLE = 60, 40, 20, 50
TITLE_H, SLOT_H, WIDGET_H = 30, 20, 24
NOTE_COLOR, NOTE_BGCOLOR = "#432", "#653"
GROUP_COLOR = "#3f789e"
# Nodes whose UI shows an image and needs room for it.
IMAGE_NODES = {"LoadImage": 330, "SaveImage": 300, "PreviewImage": 300}


@dataclass(frozen=True)
class Output:
    node: int
    slot: int


@dataclass
class Node:
    id: int
    class_type: str
    inputs: dict[str, Any]
    col: int
    title: str | None = None
    width: int | None = None
    height: int | None = None
    control: str = "fixed"  # the control_after_generate mode stored after seed widgets
    color: str | None = None
    bgcolor: str | None = None
    row: float = 0  # order within the column: by row, then declaration

    def __getitem__(self, slot: int) -> Output:
        return Output(self.id, slot)


@dataclass
class Note:
    id: int
    text: str
    col: int
    title: str | None = None
    width: int = 360
    height: int | None = None
    row: float = 0


@dataclass
class Group:
    title: str
    members: list[int]
    color: str = GROUP_COLOR


@dataclass
class Graph:
    name: str
    items: list[Node | Note] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)

    # --- building --------------------------------------------------------------------------
    def node(self, class_type: str, *, col: int, title: str | None = None, row: float = 0,
             ui_size: tuple[int, int] | None = None, control: str = "fixed", **inputs) -> Node:
        """A node; ``inputs`` are its inputs by name (values, or ``other_node[slot]`` links)."""
        width, height = ui_size or (None, None)
        n = Node(len(self.items) + 1, class_type, dict(inputs), col, title, width, height, control, row=row)
        self.items.append(n)
        return n

    def note(self, text: str, *, col: int, title: str | None = None, row: float = 0,
             ui_size: tuple[int, int | None] = (360, None)) -> Note:
        n = Note(len(self.items) + 1, text.strip(), col, title, ui_size[0], ui_size[1], row)
        self.items.append(n)
        return n

    def group(self, title: str, members: list[Node | Note], color: str = GROUP_COLOR) -> Group:
        g = Group(title, [m.id for m in members], color)
        self.groups.append(g)
        return g

    @property
    def nodes(self) -> list[Node]:
        return [n for n in self.items if isinstance(n, Node)]

    def classes(self) -> set[str]:
        return {n.class_type for n in self.nodes}

    # --- values ---------------------------------------------------------------------------
    def _values(self, node: Node, schemas: dict | None) -> list[tuple[str, Any]]:
        """(input name, value or Output) in INPUT_TYPES order, widget defaults filled in."""
        if schemas is None or node.class_type not in schemas:
            return list(node.inputs.items())
        defs = ordered_inputs(schemas[node.class_type])
        known = {d.name for d in defs}
        unknown = [k for k in node.inputs if k not in known]
        if unknown:
            raise ValueError(f"{self.name}: node {node.id} ({node.class_type}) has no input(s) {unknown}; "
                             f"it has {sorted(known)}")
        out = []
        for d in defs:
            if d.name in node.inputs:
                out.append((d.name, node.inputs[d.name]))
            elif d.is_widget:
                out.append((d.name, _default(d, self.name, node)))
            elif not d.optional:
                raise ValueError(f"{self.name}: node {node.id} ({node.class_type}) needs its input {d.name!r}")
        return out

    def title_of(self, node: Node, schemas: dict | None) -> str:
        if node.title:
            return node.title
        schema = (schemas or {}).get(node.class_type) or {}
        return schema.get("display_name") or node.class_type

    # --- API format -----------------------------------------------------------------------
    def to_api(self, schemas: dict | None = None) -> dict:
        api = {}
        for node in self.nodes:
            inputs = {}
            for name, value in self._values(node, schemas):
                if isinstance(value, Output):
                    inputs[name] = [str(value.node), value.slot]
                elif isinstance(value, list) and not is_link(value):
                    inputs[name] = {"__value__": value}
                else:
                    inputs[name] = value
            api[str(node.id)] = {"inputs": inputs, "class_type": node.class_type,
                                 "_meta": {"title": self.title_of(node, schemas)}}
        return api

    # --- UI format ------------------------------------------------------------------------
    def to_ui(self, schemas: dict) -> dict:
        missing = sorted(self.classes() - set(schemas))
        if missing:
            raise ValueError(f"{self.name}: no node schemas for {missing}")
        links: list[list] = []
        out_links: dict[tuple[int, int], list[int]] = {}
        ui_nodes: dict[int, dict] = {}
        order = self._execution_order()
        for node in self.nodes:
            schema = schemas[node.class_type]
            values = dict(self._values(node, schemas))
            defs = ordered_inputs(schema)
            inputs = []
            linked_widgets = []
            for d in defs:
                value = values.get(d.name)
                if not d.is_widget:
                    slot = {"name": d.name, "type": d.type_name, "link": None}
                    if d.optional:
                        slot["shape"] = 7  # the hollow circle the frontend draws for optional inputs
                    inputs.append(slot)
                elif isinstance(value, Output):
                    linked_widgets.append({"name": d.name, "type": d.type_name, "widget": {"name": d.name},
                                           "link": None})
            inputs += linked_widgets
            for index, slot in enumerate(inputs):
                value = values.get(slot["name"])
                if isinstance(value, Output):
                    link_id = len(links) + 1
                    origin_type = output_types(schemas[self._node(value.node).class_type])[value.slot]
                    links.append([link_id, value.node, value.slot, node.id, index, origin_type])
                    slot["link"] = link_id
                    out_links.setdefault((value.node, value.slot), []).append(link_id)
            widgets_values = []
            by_name = {d.name: d for d in defs}
            for name in widget_layout(schema):
                if name is None:
                    continue
                value = values[name]
                widgets_values.append(_widget_value(value, by_name[name]))
                d = by_name[name]
                extra = d.extra_widget_values
                control = d.options.get("control_after_generate")
                if control is None:
                    control = d.type == "INT" and d.name in ("seed", "noise_seed")
                if control:
                    widgets_values.append(node.control)
                    extra -= 1
                widgets_values.extend(["image"] * extra)  # the upload button's value
            props = {"Node name for S&R": node.class_type,
                     "cnr_id": PACK_CNR_ID if node.class_type.startswith(PACK_PREFIX) else "comfy-core"}
            entry = {"id": node.id, "type": node.class_type, "pos": [0, 0], "size": [0, 0], "flags": {},
                     "order": order[node.id], "mode": 0, "inputs": inputs, "outputs": [], "properties": props,
                     "widgets_values": widgets_values}
            if node.title:
                entry["title"] = node.title
            if node.color:
                entry["color"], entry["bgcolor"] = node.color, node.bgcolor or node.color
            width = max(_node_width(defs, values), 60 + 7 * len(self.title_of(node, schemas)))
            entry["size"] = [node.width or min(width, 520), node.height or _node_height(node, defs, schema)]
            ui_nodes[node.id] = entry
        for node in self.nodes:
            schema = schemas[node.class_type]
            ui_nodes[node.id]["outputs"] = [
                {"name": name, "type": typ, "links": out_links.get((node.id, i)) or None, "slot_index": i}
                for i, (name, typ) in enumerate(zip(output_names(schema), output_types(schema), strict=True))]
        next_order = len(self.nodes)
        for item in self.items:
            if isinstance(item, Note):
                entry = {"id": item.id, "type": "MarkdownNote", "pos": [0, 0],
                         "size": [item.width, item.height or _note_height(item)], "flags": {},
                         "order": next_order, "mode": 0, "inputs": [], "outputs": [], "properties": {},
                         "widgets_values": [item.text], "color": NOTE_COLOR, "bgcolor": NOTE_BGCOLOR}
                if item.title:
                    entry["title"] = item.title
                next_order += 1
                ui_nodes[item.id] = entry
        groups = self._layout(ui_nodes)
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://github.com/cones2-comfyui/comfyui-cones2/{self.name}")),
            "revision": 0,
            "last_node_id": len(self.items),
            "last_link_id": len(links),
            "nodes": [ui_nodes[item.id] for item in self.items],
            "links": links,
            "groups": groups,
            "config": {},
            "extra": {"ds": {"scale": 0.75, "offset": [40, 40]}, "frontendVersion": FRONTEND_VERSION},
            "version": 0.4,
        }

    def _node(self, node_id: int) -> Node:
        item = self.items[node_id - 1]
        assert isinstance(item, Node)
        return item

    def _execution_order(self) -> dict[int, int]:
        deps = {n.id: {v.node for v in n.inputs.values() if isinstance(v, Output)} for n in self.nodes}
        order, done = {}, set()
        while len(done) < len(deps):
            ready = [i for i in deps if i not in done and deps[i] <= done]
            if not ready:
                raise ValueError(f"{self.name}: the graph has a cycle")
            for i in ready:
                order[i] = len(order)
                done.add(i)
        return order

    def _layout(self, ui_nodes: dict[int, dict]) -> list[dict]:
        """Place nodes in columns; return the groups with their bounding boxes."""
        group_of = {m: gi for gi, g in enumerate(self.groups) for m in g.members}
        cols = sorted({item.col for item in self.items})
        widths = {c: max(ui_nodes[i.id]["size"][0] for i in self.items if i.col == c) for c in cols}
        x, col_x = 0, {}
        for c in cols:
            col_x[c] = x
            x += widths[c] + COLUMN_GAP
        for c in cols:
            y, previous_group = 0, None
            for item in sorted((i for i in self.items if i.col == c), key=lambda i: (i.row, i.id)):
                gi = group_of.get(item.id)
                if gi is not None and gi != previous_group:
                    y += GROUP_TITLE  # room for the group's title band
                elif gi is None and previous_group is not None:
                    y += GROUP_PAD
                ui_nodes[item.id]["pos"] = [col_x[c], y]
                y += ui_nodes[item.id]["size"][1] + TITLE_H + ROW_GAP
                previous_group = gi
        groups = []
        for gi, g in enumerate(self.groups):
            boxes = [(ui_nodes[m]["pos"], ui_nodes[m]["size"]) for m in g.members]
            x0 = min(p[0] for p, _ in boxes) - GROUP_PAD
            y0 = min(p[1] for p, _ in boxes) - TITLE_H - GROUP_TITLE + 10
            x1 = max(p[0] + s[0] for p, s in boxes) + GROUP_PAD
            y1 = max(p[1] + s[1] for p, s in boxes) + GROUP_PAD
            groups.append({"id": gi + 1, "title": g.title, "bounding": [x0, y0, x1 - x0, y1 - y0],
                           "color": g.color, "font_size": 24, "flags": {}})
        return groups


def _default(d: InputDef, graph: str, node: Node) -> Any:
    if "default" in d.options:
        return d.options["default"]
    options = d.combo_options
    if options:
        return options[0]
    if d.type in ("INT", "FLOAT"):
        return d.options.get("min", 0)
    if d.type == "BOOLEAN":
        return False
    if d.type == "STRING":
        return ""
    raise ValueError(f"{graph}: node {node.id} ({node.class_type}): give a value for {d.name!r} (no default)")


def _widget_value(value: Any, d: InputDef) -> Any:
    if isinstance(value, Output):  # a linked widget keeps a value of its own in widgets_values
        return d.options.get("default", (d.combo_options or [None])[0])
    return value


def _node_width(defs: list[InputDef], values: dict) -> int:
    """Wide enough for a widget's name and value side by side (about 7 px a character)."""
    if any(d.is_widget and d.options.get("multiline") for d in defs):
        return 420
    widest = max((len(d.name) + len(str(values.get(d.name, ""))) for d in defs if d.is_widget), default=0)
    return int(min(480, max(320, 90 + 7 * widest)))


def _node_height(node: Node, defs: list[InputDef], schema: dict) -> int:
    sockets = sum(1 for d in defs if not d.is_widget or isinstance(node.inputs.get(d.name), Output))
    slots = max(sockets, len(output_types(schema)))
    h = slots * SLOT_H + 10
    for d in defs:
        if not d.is_widget or isinstance(node.inputs.get(d.name), Output):
            continue
        if d.options.get("multiline"):
            text = str(node.inputs.get(d.name, ""))
            h += max(90, 20 * (text.count("\n") + 2))
        else:
            h += WIDGET_H * (1 + d.extra_widget_values)
    return max(h + IMAGE_NODES.get(node.class_type, 0), 60)


def _note_height(note: Note) -> int:
    lines = sum(1 + len(line) // 48 for line in note.text.split("\n"))
    return max(60, 20 * lines + 20)
