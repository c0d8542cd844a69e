"""Chip macro placement: Circuit Training / Bookshelf formats, proxy cost, force-directed, rendering."""
