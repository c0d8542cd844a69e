"""A netlist without a .plc gets a default canvas that reaches every fixed port."""

from moeplace.data import CHIP_DIR
from moeplace.place.chip.canvas import default_header
from moeplace.place.chip.netlist import load_netlist


def test_default_canvas_covers_ports():
    nl = load_netlist(CHIP_DIR / "circuit_training" / "sample_clustered" / "netlist.pb.txt")
    header = default_header(nl)
    ports = nl.ports
    assert len(ports) > 0
    assert header.width >= nl.x[ports].max() and header.height >= nl.y[ports].max()
    area = header.width * header.height
    assert area >= nl.macro_area() / 0.6 - 1e-6
