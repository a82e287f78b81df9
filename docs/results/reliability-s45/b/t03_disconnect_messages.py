# ruff: noqa
import os
from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parent))
from disconnect import check

check("/v1/messages", 26003, 26203)
