"""`python -m nerve.storage.cleaner_worker <broker pid>`: the log cleaner's worker process
(cleaner_io.worker_main; its own module so pickled classes keep their cleaner_io names)."""

import sys

from nerve.storage.cleaner_io import worker_main

if __name__ == "__main__":
    worker_main(int(sys.argv[1]))
