#!/usr/bin/env python3
"""llama_kernel's command line; see `python main.py --help`."""
import sys

from llama_kernel.cli import main

if __name__ == "__main__":
    sys.exit(main())
