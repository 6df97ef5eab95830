"""tagloop.tools.tagging"""
