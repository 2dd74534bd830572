"""attnserve: serve vision attention models with the attention maps that explain each prediction."""

__version__ = "0.1.0"
