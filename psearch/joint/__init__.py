"""psearch.joint"""
