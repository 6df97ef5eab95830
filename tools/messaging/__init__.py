"""tagloop.tools.messaging"""
