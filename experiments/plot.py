"""Redraws the figure of an existing workdir: python experiments/plot.py --workdir DIR"""

import argparse

from uorojax.analysis import plots

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", default=None)
    print(plots.plot_workdir(parser.parse_args().workdir, parser.parse_args().out))
