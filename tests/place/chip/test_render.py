"""Rendering a placement to PNG."""

from __future__ import annotations

import numpy as np
import pytest

from moeplace.data import CHIP_DIR
from moeplace.place.chip.netlist import load_netlist
from moeplace.place.chip.plc import load_placement
from moeplace.place.chip.render import render_placement


@pytest.fixture()
def sample():
    d = CHIP_DIR / "circuit_training" / "sample_clustered"
    netlist = load_netlist(d / "netlist.pb.txt")
    return netlist, load_placement(netlist, d / "initial.plc")


def _colours(path):
    import matplotlib.image as mpimg

    img = mpimg.imread(path)[..., :3]
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
    return img


def test_png_shows_hard_macros_and_ports(tmp_path, sample):
    netlist, header = sample
    out = tmp_path / "p.png"
    render_placement(out, netlist, header, title="sample")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = _colours(out)
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    blue = (b > 0.6) & (r < 0.5) & (g < 0.65)  # hard macro fill
    red = (r > 0.7) & (g < 0.3) & (b < 0.3)  # ports
    assert blue.sum() > 1000 and red.sum() > 5


def test_png_with_congestion_map_and_moved_macro(tmp_path, sample):
    netlist, header = sample
    x = netlist.x.copy()
    x[netlist.hard_macros[0]] = 250.0
    out = tmp_path / "c.png"
    render_placement(out, netlist, header, x=x, congestion="max")
    render_placement(tmp_path / "d.png", netlist, header, congestion=np.ones((header.rows, header.columns)))
    assert out.stat().st_size > 1000 and (tmp_path / "d.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="does not match the grid"):
        render_placement(tmp_path / "e.png", netlist, header, congestion=np.ones((3, 3)))
    assert not (tmp_path / "e.png").exists()
