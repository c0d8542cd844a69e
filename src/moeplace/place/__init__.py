"""One sequential-placement core shared by device placement and chip macro placement."""
