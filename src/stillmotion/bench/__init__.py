"""GPU benchmark of the memory plans on the full-size I2VGen-XL architecture (random weights, no download).

``python -m stillmotion.bench --help``; docs/benchmark.md has the one command and the wheels a GPU box needs.
"""
