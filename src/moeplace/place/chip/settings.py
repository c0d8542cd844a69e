"""Proxy-cost settings people use: cost weights, the congestion grid, the smoothing range, and named
presets for published setups. They live on the `PlcHeader` (weights are not stored in .plc files).

Sources (see docs/chip_formats.md): Circuit Training's environment/environment.py (weights 1, 1, 0.5)
and environment/placement_util.py (congestion grid from routes_per_congestion_grid = 1000, smoothing
5, both since its 2023-06-13 change; before it, the placement grid and smoothing 2); TILOS
MacroPlacement's Docs/ProxyCost/README.md (Google's internal weights 1, 0.5, 0.5).
"""

from __future__ import annotations

from dataclasses import replace

from moeplace.errors import InputError
from moeplace.place.chip.plc import PlcHeader

# (wirelength, density, congestion) weights
WEIGHT_PRESETS: dict[str, tuple[float, float, float]] = {"google": (1.0, 0.5, 0.5), "ct": (1.0, 1.0, 0.5)}
ROUTES_PER_CONGESTION_GRID = 1000.0  # Circuit Training's default
# name -> (congestion grid, smoothing, weights); "header" keeps what the .plc header says
PRESETS: dict[str, tuple[str, int | None, str]] = {
    "reference": ("header", None, "google"),  # what reproduces the reference tool's .plc figures
    "tilos": ("placement", 2, "google"),  # TILOS MacroPlacement's Ariane133 tables (CT code of 2022-23)
    "ct": ("ct", 5, "ct"),  # Circuit Training's current public defaults
}


def ct_congestion_grid(header: PlcHeader, routes_per_congestion_grid: float = ROUTES_PER_CONGESTION_GRID
                       ) -> tuple[int, int]:
    """Circuit Training's congestion grid (placement_util.create_placement_cost without its legacy
    flag): square cells of side 2 x routes_per_congestion_grid / (H + V routes per micron)."""
    if not routes_per_congestion_grid > 0:
        raise InputError(f"routes per congestion grid must be positive (got {routes_per_congestion_grid})")
    size = 2.0 * routes_per_congestion_grid / (header.hroutes_per_micron + header.vroutes_per_micron)
    return max(1, int(header.width / size)), max(1, int(header.height / size))


def parse_weights(text: str) -> tuple[float, float, float]:
    """A preset name (google, ct) or three numbers 'w,d,c'; InputError otherwise."""
    if text in WEIGHT_PRESETS:
        return WEIGHT_PRESETS[text]
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(v >= 0 for v in values):
        raise InputError(f"--weights: want google, ct or three non-negative numbers 'w,d,c', got {text!r}")
    return values  # type: ignore[return-value]


def with_settings(header: PlcHeader, *, congestion_grid: str | tuple[int, int] = "header",
                  routes_per_congestion_grid: float = ROUTES_PER_CONGESTION_GRID,
                  smoothing: float | None = None, weights: str | tuple[float, float, float] | None = None
                  ) -> PlcHeader:
    """A copy of `header` with cost settings changed. congestion_grid: "header" (as the file says),
    "placement" (the placement grid), "ct" (Circuit Training's separate grid), or (columns, rows)."""
    hd = replace(header)
    if congestion_grid == "placement":
        hd.congestion_columns = hd.congestion_rows = None
    elif congestion_grid == "ct":
        hd.congestion_columns, hd.congestion_rows = ct_congestion_grid(hd, routes_per_congestion_grid)
    elif isinstance(congestion_grid, tuple):
        c, r = congestion_grid
        if c < 1 or r < 1:
            raise InputError(f"congestion grid must have at least 1 column and 1 row (got {c} x {r})")
        hd.congestion_columns, hd.congestion_rows = int(c), int(r)
    elif congestion_grid != "header":
        raise InputError(f"congestion grid: want header, placement, ct or CxR, got {congestion_grid!r}")
    if smoothing is not None:
        if smoothing < 0:
            raise InputError(f"smoothing range must be >= 0 (got {smoothing})")
        hd.smoothing = float(smoothing)
    if weights is not None:
        hd.weights = parse_weights(weights) if isinstance(weights, str) else tuple(weights)  # type: ignore
    return hd


def preset(header: PlcHeader, name: str, routes_per_congestion_grid: float = ROUTES_PER_CONGESTION_GRID
           ) -> PlcHeader:
    """`header` in a named preset's settings (see PRESETS)."""
    if name not in PRESETS:
        raise InputError(f"settings preset: want one of {', '.join(PRESETS)}, got {name!r}")
    grid, smoothing, weights = PRESETS[name]
    return with_settings(header, congestion_grid=grid, routes_per_congestion_grid=routes_per_congestion_grid,
                         smoothing=smoothing, weights=weights)
