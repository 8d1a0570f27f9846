"""Run pyCANON's k-anonymity check on a CSV (in its own venv: pycanon pins numpy/pandas exactly).

usage: k_anonymity.py FILE.csv QI[,QI...]   -> prints k
"""

import sys

import pandas as pd
from pycanon import anonymity

frame = pd.read_csv(sys.argv[1], dtype=str)
print(anonymity.k_anonymity(frame, sys.argv[2].split(",")))
