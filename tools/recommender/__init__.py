"""tagloop.tools.recommender"""
