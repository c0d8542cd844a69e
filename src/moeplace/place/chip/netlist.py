"""The chip netlist as numpy arrays, and a reader of Circuit Training's protobuf-text netlists.

A Circuit Training netlist (`netlist.pb.txt`, a tensorflow GraphDef in protobuf text) lists nodes:
hard macros (`MACRO`), their pins (`MACRO_PIN`, with offsets from the macro centre), soft macros
(clustered standard cells, `macro`), their pins (`macro_pin`), ports (`PORT`) and standard cells
(`STDCELL`). A node's `input` fields name the pins it drives, so each driver with inputs is one net;
the net's weight is the driver's `weight` attribute (default 1). Node order is the .plc `node_index`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

import numpy as np

from moeplace.errors import InputError
from moeplace.place.chip.pbtxt import PbNode, PbtxtReader


class NodeKind(IntEnum):
    """What a netlist node is."""

    HARD_MACRO = 0
    SOFT_MACRO = 1
    PORT = 2
    HARD_MACRO_PIN = 3
    SOFT_MACRO_PIN = 4


# Circuit Training's `type` attribute -> our kind (a STDCELL is a soft macro that is its own pin).
# Case matters for macros: upper-case MACRO is a hard macro, lower-case macro a soft macro.
_TYPE_TO_KIND = {
    "MACRO": NodeKind.HARD_MACRO,
    "macro": NodeKind.SOFT_MACRO,
    "STDCELL": NodeKind.SOFT_MACRO,
    "stdcell": NodeKind.SOFT_MACRO,
    "PORT": NodeKind.PORT,
    "port": NodeKind.PORT,
    "MACRO_PIN": NodeKind.HARD_MACRO_PIN,
    "macro_pin": NodeKind.SOFT_MACRO_PIN,
}

ORIENTATIONS = ("N", "S", "E", "W", "FN", "FS", "FE", "FW")
# Orientation -> (a, b, c, d) with offset' = (a*dx + b*dy, c*dx + d*dy) (DEF rotations and flips).
_ORIENT_MATRIX = {
    "N": (1, 0, 0, 1), "S": (-1, 0, 0, -1), "FN": (-1, 0, 0, 1), "FS": (1, 0, 0, -1),
    "E": (0, 1, -1, 0), "W": (0, -1, 1, 0), "FE": (0, -1, -1, 0), "FW": (0, 1, 1, 0),
}
_ORIENT_CODE = {name: i for i, name in enumerate(ORIENTATIONS)}
_ORIENT_TABLE = np.array([_ORIENT_MATRIX[o] for o in ORIENTATIONS], dtype=np.float64)  # [8, 4]


def orientation_code(name: str) -> int:
    """Index of an orientation name in ORIENTATIONS ('-' or '' count as N)."""
    if name in ("-", ""):
        return 0
    try:
        return _ORIENT_CODE[name]
    except KeyError:
        raise ValueError(f"orientation: unknown {name!r} (expected one of {ORIENTATIONS})") from None


def orient_offsets(dx: np.ndarray, dy: np.ndarray, orient: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pin offsets `(dx, dy)` from a macro centre transformed by orientation codes `orient` (vectorised)."""
    m = _ORIENT_TABLE[orient]
    return m[..., 0] * dx + m[..., 1] * dy, m[..., 2] * dx + m[..., 3] * dy


def swaps_axes(orient: np.ndarray) -> np.ndarray:
    """True where an orientation turns a macro by 90 degrees (E, W, FE, FW swap width and height)."""
    return _ORIENT_TABLE[orient][..., 0] == 0


@dataclass
class Netlist:
    """A chip netlist: one row per node (file order = .plc node_index), nets as CSR, positions = centres."""

    names: list[str]
    kind: np.ndarray  # int8 [N] NodeKind
    width: np.ndarray  # float64 [N] (0 for pins and ports)
    height: np.ndarray  # float64 [N]
    x: np.ndarray  # float64 [N] centre x (pins: absolute x as read; see pin_positions)
    y: np.ndarray  # float64 [N]
    orient: np.ndarray  # int8 [N] index into ORIENTATIONS (hard macros; 0 elsewhere)
    fixed: np.ndarray  # bool [N]
    parent: np.ndarray  # int64 [N] macro of a pin, -1 otherwise
    x_offset: np.ndarray  # float64 [N] pin offset from the parent centre (orientation N)
    y_offset: np.ndarray  # float64 [N]
    weight: np.ndarray  # float64 [N] node `weight` attribute (1 where absent)
    net_driver: np.ndarray  # int64 [M] driver node of each net
    net_ptr: np.ndarray  # int64 [M+1] CSR offsets into net_pins
    net_pins: np.ndarray  # int64 [P] nodes of each net, the driver first
    net_weight: np.ndarray  # float64 [M] the driver's weight
    canvas: tuple[float, float] | None = None  # (width, height) where the file states one
    metadata: dict[str, object] = field(default_factory=dict)
    source: str = ""
    _index: dict[str, int] | None = field(default=None, repr=False, compare=False)

    @property
    def num_nodes(self) -> int:
        """Number of nodes of every kind."""
        return len(self.names)

    @property
    def num_nets(self) -> int:
        """Number of nets (drivers with at least one sink)."""
        return len(self.net_driver)

    def of_kind(self, kind: NodeKind) -> np.ndarray:
        """Indices of the nodes of one kind, in node order."""
        return np.flatnonzero(self.kind == int(kind))

    @property
    def hard_macros(self) -> np.ndarray:
        """Indices of the hard macros."""
        return self.of_kind(NodeKind.HARD_MACRO)

    @property
    def soft_macros(self) -> np.ndarray:
        """Indices of the soft macros (clustered standard cells)."""
        return self.of_kind(NodeKind.SOFT_MACRO)

    @property
    def ports(self) -> np.ndarray:
        """Indices of the ports."""
        return self.of_kind(NodeKind.PORT)

    @property
    def macros(self) -> np.ndarray:
        """Indices of hard and soft macros (the nodes with an area)."""
        return np.flatnonzero((self.kind == NodeKind.HARD_MACRO) | (self.kind == NodeKind.SOFT_MACRO))

    def index(self, name: str) -> int:
        """Node index of a name (KeyError if absent)."""
        if self._index is None:
            self._index = {n: i for i, n in enumerate(self.names)}
        return self._index[name]

    def footprint(self) -> tuple[np.ndarray, np.ndarray]:
        """Width and height of every node as placed (E/W orientations swap a hard macro's sides)."""
        swap = swaps_axes(self.orient) & (self.kind == NodeKind.HARD_MACRO)
        return np.where(swap, self.height, self.width), np.where(swap, self.width, self.height)

    def macro_area(self) -> float:
        """Total area of hard and soft macros."""
        m = self.macros
        return float(np.sum(self.width[m] * self.height[m]))

    def net_sizes(self) -> np.ndarray:
        """Number of pins (driver included) of each net."""
        return np.diff(self.net_ptr)

    def copy(self) -> Netlist:
        """A copy whose position/orientation arrays can be changed without touching this one."""
        return Netlist(**{k: (v.copy() if isinstance(v, np.ndarray) else v)
                          for k, v in self.__dict__.items() if k != "_index"})


def pin_positions(netlist: Netlist, x: np.ndarray | None = None, y: np.ndarray | None = None,
                  orient: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Absolute position of every node: hard-macro pins = parent centre + oriented offset, soft-macro
    pins = parent centre, macros and ports = their own centre. `x, y, orient` default to the netlist's."""
    x = netlist.x if x is None else x
    y = netlist.y if y is None else y
    orient = netlist.orient if orient is None else orient
    px, py = x.astype(np.float64, copy=True), y.astype(np.float64, copy=True)
    pins = np.flatnonzero(netlist.parent >= 0)
    px[pins], py[pins] = positions_of(netlist, pins, x, y, orient)
    return px, py


def positions_of(netlist: Netlist, nodes: np.ndarray, x: np.ndarray, y: np.ndarray,
                 orient: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Absolute positions of some nodes (pins follow their macros, as in pin_positions)."""
    par = netlist.parent[nodes]
    is_pin = par >= 0
    owner = np.where(is_pin, par, nodes)
    hard_pin = netlist.kind[nodes] == NodeKind.HARD_MACRO_PIN
    dx, dy = orient_offsets(netlist.x_offset[nodes], netlist.y_offset[nodes], orient[owner])
    return (x[owner] + np.where(hard_pin, dx, 0.0), y[owner] + np.where(hard_pin, dy, 0.0))


def _num(node: PbNode, key: str, path: Path, default: float | None = None) -> float:
    """A numeric attribute of a node (or `default`); InputError if absent without default or not a number."""
    v = node.attrs.get(key, default)
    if v is None:
        raise InputError(f"{path}:{node.line}: node {node.name!r} lacks attribute {key!r}")
    if not isinstance(v, float):
        raise InputError(f"{path}:{node.line}: node {node.name!r} attribute {key!r} is not a number: {v!r}")
    return v


def load_netlist(path: str | Path) -> Netlist:
    """Read a Circuit Training protobuf-text netlist (plain or gzipped) into a Netlist."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: netlist file not found")
    raw = PbtxtReader(path).read()
    metadata: dict[str, object] = {}
    nodes: list[PbNode] = []
    for nd in raw:
        if nd.name == "__metadata__":
            metadata.update(nd.attrs)
        else:
            nodes.append(nd)
    if not nodes:
        raise InputError(f"{path}: no nodes in netlist")
    n = len(nodes)
    names = [nd.name for nd in nodes]  # type: ignore[misc]
    index: dict[str, int] = {}
    for i, nd in enumerate(nodes):
        if nd.name in index:
            raise InputError(f"{path}:{nd.line}: duplicate node name {nd.name!r}")
        index[nd.name] = i  # type: ignore[index]
    kind = [0] * n
    width, height, x, y = [0.0] * n, [0.0] * n, [0.0] * n, [0.0] * n
    orient, parent = [0] * n, [-1] * n
    x_off, y_off, weight = [0.0] * n, [0.0] * n, [1.0] * n
    hard, soft, port = int(NodeKind.HARD_MACRO), int(NodeKind.SOFT_MACRO), int(NodeKind.PORT)
    kinds = {t: int(k) for t, k in _TYPE_TO_KIND.items()}
    for i, nd in enumerate(nodes):
        attrs = nd.attrs
        k = kinds.get(attrs.get("type"))  # type: ignore[arg-type]
        if k is None:
            raise InputError(f"{path}:{nd.line}: node {nd.name!r} has unknown type {attrs.get('type')!r}")
        kind[i] = k
        x[i] = _num(nd, "x", path, 0.0)
        y[i] = _num(nd, "y", path, 0.0)
        if "weight" in attrs:
            weight[i] = _num(nd, "weight", path)
        if k in (hard, soft):
            width[i] = _num(nd, "width", path)
            height[i] = _num(nd, "height", path)
            if width[i] < 0 or height[i] < 0:
                raise InputError(f"{path}:{nd.line}: node {nd.name!r} has a negative size")
            if k == hard:
                o = str(attrs.get("orientation", "N"))
                try:
                    orient[i] = orientation_code(o)
                except ValueError:
                    raise InputError(f"{path}:{nd.line}: node {nd.name!r} has unknown orientation {o!r}") \
                        from None
        elif k != port:
            macro = attrs.get("macro_name")
            if macro is None:
                raise InputError(f"{path}:{nd.line}: pin {nd.name!r} lacks attribute 'macro_name'")
            j = index.get(str(macro))
            if j is None:
                raise InputError(f"{path}:{nd.line}: pin {nd.name!r} names unknown macro {macro!r}")
            parent[i] = j
            x_off[i] = _num(nd, "x_offset", path, 0.0)
            y_off[i] = _num(nd, "y_offset", path, 0.0)
    kind_list, kind = kind, np.asarray(kind, np.int8)
    width, height, x, y = (np.asarray(v, np.float64) for v in (width, height, x, y))
    orient, parent = np.asarray(orient, np.int8), np.asarray(parent, np.int64)
    x_off, y_off, weight = (np.asarray(v, np.float64) for v in (x_off, y_off, weight))
    fixed = kind == port
    # Check pin parents have the right kind (done after all kinds are known).
    pin_idx = np.flatnonzero(parent >= 0)
    want = np.where(kind[pin_idx] == NodeKind.HARD_MACRO_PIN, hard, soft)
    bad = np.flatnonzero(kind[parent[pin_idx]] != want)
    if len(bad):
        i = int(pin_idx[bad[0]])
        nd = nodes[i]
        raise InputError(f"{path}:{nd.line}: pin {nd.name!r} belongs to {names[parent[i]]!r}, "
                         f"which is not a {NodeKind(int(want[bad[0]])).name.lower()}")
    drivers, ptr, pins = [], [0], []
    for i, nd in enumerate(nodes):
        if not nd.inputs:
            continue
        if kind_list[i] == hard:
            raise InputError(f"{path}:{nd.line}: hard macro {nd.name!r} drives a net (only pins, ports "
                             "and standard cells can)")
        drivers.append(i)
        pins.append(i)
        for s, line in zip(nd.inputs, nd.input_lines):
            j = index.get(s)
            if j is None:
                raise InputError(f"{path}:{line}: node {nd.name!r} drives unknown node {s!r}")
            pins.append(j)
        ptr.append(len(pins))
    net_driver = np.asarray(drivers, np.int64)
    canvas = None
    if "canvas_width" in metadata and "canvas_height" in metadata:
        canvas = (float(metadata["canvas_width"]), float(metadata["canvas_height"]))  # type: ignore[arg-type]
    return Netlist(
        names=names, kind=kind, width=width, height=height, x=x, y=y, orient=orient, fixed=fixed,
        parent=parent, x_offset=x_off, y_offset=y_off, weight=weight, net_driver=net_driver,
        net_ptr=np.asarray(ptr, np.int64), net_pins=np.asarray(pins, np.int64),
        net_weight=weight[net_driver].copy(), canvas=canvas, metadata=metadata, source=str(path),
    )
