"""Write a Netlist as Circuit Training's protobuf-text netlist (`netlist.pb.txt`), as `load_netlist` reads it.

One `node { ... }` block per node in node order (so the .plc `node_index` is kept), attributes sorted
by key as protobuf text output sorts a map, each driver's sinks as its `input` fields, a `weight`
attribute where a net's weight is not 1, and a `__metadata__` node first (canvas size and any
metadata the netlist carries). Numbers are written with up to 10 significant digits, so the same
netlist always gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moeplace.place.chip.netlist import ORIENTATIONS, Netlist, NodeKind, pin_positions
from moeplace.utils import atomic_write_text

EPS = 1e-9


def _num(v: float) -> str:
    """A number as written in the netlist (integers without a point, like Circuit Training's files)."""
    return f"{float(v):.10g}"


def _quote(s: str) -> str:
    """A protobuf text string literal."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _attr(key: str, value: float | str) -> list[str]:
    """One `attr` block: numbers as `f`, strings as `placeholder` (Circuit Training's enum-like values)."""
    number = isinstance(value, (int, float, np.floating))
    body = f"f: {_num(value)}" if number else f"placeholder: {_quote(str(value))}"
    return ["  attr {", f"    key: {_quote(key)}", "    value {", f"      {body}", "    }", "  }"]


def port_side(x: float, y: float, width: float, height: float) -> str:
    """The canvas side a port lies on (LEFT, RIGHT, BOTTOM, TOP; the nearest one for an inside point)."""
    d = {"LEFT": x, "RIGHT": width - x, "BOTTOM": y, "TOP": height - y}
    return min(d, key=d.__getitem__)


def netlist_pbtxt(netlist: Netlist) -> str:
    """The netlist as protobuf text (positions, orientations and sizes as the netlist holds them)."""
    nl = netlist
    sinks: dict[int, list[int]] = {}
    for m, d in enumerate(nl.net_driver):
        sinks[int(d)] = nl.net_pins[nl.net_ptr[m] + 1: nl.net_ptr[m + 1]].tolist()
    has_pins = np.zeros(nl.num_nodes, bool)
    has_pins[nl.parent[nl.parent >= 0]] = True
    px, py = pin_positions(nl)
    canvas = nl.canvas
    out = ["# proto-file: tensorflow/core/framework/graph.proto", "# proto-message: tensorflow.GraphDef"]
    meta: dict[str, float | str] = {k: v for k, v in nl.metadata.items() if isinstance(v, (float, int, str))}
    if canvas is not None:
        meta["canvas_width"], meta["canvas_height"] = canvas
    if meta:
        out += ["node {", f"  name: {_quote('__metadata__')}"]
        for k in sorted(meta):
            out += _attr(k, meta[k])
        out.append("}")
    for i, name in enumerate(nl.names):
        kind = int(nl.kind[i])
        attrs: dict[str, float | str] = {"x": float(px[i]), "y": float(py[i])}
        if kind == NodeKind.HARD_MACRO:
            attrs.update(type="MACRO", width=float(nl.width[i]), height=float(nl.height[i]),
                         orientation=ORIENTATIONS[int(nl.orient[i])])
        elif kind == NodeKind.SOFT_MACRO:
            attrs.update(type="macro" if has_pins[i] else "STDCELL", width=float(nl.width[i]),
                         height=float(nl.height[i]))
        elif kind == NodeKind.PORT:
            attrs["type"] = "PORT"
            if canvas is not None:
                attrs["side"] = port_side(float(nl.x[i]), float(nl.y[i]), *canvas)
        else:
            attrs.update(type="MACRO_PIN" if kind == NodeKind.HARD_MACRO_PIN else "macro_pin",
                         macro_name=nl.names[int(nl.parent[i])], x_offset=float(nl.x_offset[i]),
                         y_offset=float(nl.y_offset[i]))
        if i in sinks and abs(float(nl.weight[i]) - 1.0) > EPS:
            attrs["weight"] = float(nl.weight[i])
        out += ["node {", f"  name: {_quote(name)}"]
        out += [f"  input: {_quote(nl.names[j])}" for j in sinks.get(i, ())]
        for k in sorted(attrs):
            out += _attr(k, attrs[k])
        out.append("}")
    return "\n".join(out) + "\n"


def write_netlist(path: str | Path, netlist: Netlist) -> None:
    """Write the netlist as protobuf text, atomically (temporary file, then rename)."""
    atomic_write_text(path, netlist_pbtxt(netlist))
