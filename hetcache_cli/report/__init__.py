"""Pictures of an edit: a side-by-side comparison video, a plot of what the cache did, a one-window preview.

Everything here reads files or arrays an edit already produced; matplotlib is needed only for the cache plot.
"""
