import os

# The semantic cache's numpy products are small and run on the event loop: OpenBLAS's own thread pool only adds
# millisecond stalls whenever another process holds the other core. Set before numpy loads; an explicit value wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from gateway.cli.main import main  # noqa: E402

main()
