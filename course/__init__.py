"""Helper library of the quantization course.

Import the part you need: ``from course import quant, data, models, train, measure``.
Each module holds one concept; see the README for the map.
"""

__version__ = "0.1.0"
