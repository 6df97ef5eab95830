"""tagloop.evals"""
