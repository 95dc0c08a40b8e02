"""conveyor's own benchmark: the peers' workloads (../shared/peers) run on conveyor.

`python bench/run.py --help`; see bench/README.md.
"""
