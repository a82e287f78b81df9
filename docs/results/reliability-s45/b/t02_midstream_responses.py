# ruff: noqa
import os
from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parent))
from midstream import check

check("/v1/responses", 26002, 26202)
