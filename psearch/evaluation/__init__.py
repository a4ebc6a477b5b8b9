"""psearch.evaluation"""
