"""tagloop.agent"""
