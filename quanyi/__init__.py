"""quanyi: sell virtual rights through chat."""

__version__ = "0.1.0"
