"""psearch.gallery"""
