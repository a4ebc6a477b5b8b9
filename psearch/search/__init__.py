"""The query layer, above the gallery: ``PersonSearch``, pair search (QEEPS pair by pair,
re-ranking a shortlist) and gallery evaluation."""
