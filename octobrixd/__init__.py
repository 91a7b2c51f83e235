"""octobrix: one Linux computer, many 3D printers."""

__version__ = "0.1.0"
