"""psearch.data"""
