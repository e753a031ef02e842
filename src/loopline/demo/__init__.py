"""The demo: a workspace of dirty sample sources and the whole loop run on them."""
