"""psearch.reid"""
