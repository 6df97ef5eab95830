"""tagloop.tools"""
