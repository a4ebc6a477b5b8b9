"""psearch.detector"""
