"""Classical baselines that need no training: a colour-histogram re-ID embedder."""

from psearch.baselines.color import ColorHistogramEmbedder

__all__ = ["ColorHistogramEmbedder"]
