"""`faceclean review`: a local web app over a `faceclean clean` folder whose decisions the
cleaning keeps.

One module per concern: :mod:`.index` (the review queues, sorted by doubt and precomputed
once per clean folder, read one row group per page), :mod:`.store` (the person's decisions,
``CLEAN_DIR/review.parquet``, saved atomically at every click), :mod:`.thumbs` (which files
may be served, and lazily made, cached thumbnails), :mod:`.pages` (the HTML, no JavaScript
build step and nothing fetched from the network), and :mod:`.server` (the HTTP server).
``faceclean clean --review FILE`` is :mod:`faceclean.cleaning.review_apply`.
"""
