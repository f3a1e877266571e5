import multiprocessing
import sys

from app.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # the bundle re-enters here for the benchmark's fresh processes
    sys.exit(main())
