"""tagloop.tools.recommender: training, storing, serving and explaining the recommender."""

MAX_K = 1000  # the most items one request returns: `tagloop recommend --k` and HTTP `?k=` alike
