"""psearch: person search as a detector -> re-ID -> FAISS gallery cascade."""

__version__ = "0.1.0"
