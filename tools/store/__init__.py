"""tagloop.tools.store"""
