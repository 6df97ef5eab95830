"""tagloop.policies"""
